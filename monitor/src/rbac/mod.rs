//! RBAC engine (issue 4).
