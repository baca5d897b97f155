//! eBPF sensor.
