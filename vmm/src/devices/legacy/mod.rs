//! Legacy PC devices on port I/O: the 8250 UART (with its capped console
//! file) and the i8042 controller.

pub mod capped;
pub mod i8042;
pub mod serial;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
