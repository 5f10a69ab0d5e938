//! Output formats. Exporters only read a [`crate::snapshot::Snapshot`]; they never touch the kernel.

pub mod munin;
pub mod prometheus;
