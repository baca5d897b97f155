//! Token identity: JWT decode and verification (issue 3).
