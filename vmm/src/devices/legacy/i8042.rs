//! A minimal i8042 keyboard controller: enough for Linux's `reboot=k`, which
//! waits for the input buffer to drain and writes 0xFE (pulse reset) to the
//! command port. The reset ends the VM.

use serde::{Deserialize, Serialize};

use super::super::DeviceAction;

/// Data port.
pub const I8042_PORT_DATA: u16 = 0x60;
/// Status (read) / command (write) port.
pub const I8042_PORT_COMMAND: u16 = 0x64;
/// Ports from the data port up to and including the command port.
pub const I8042_PORT_COUNT: u16 = 5;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;
const SELF_TEST_OK: u8 = 0x55;
/// Status: output buffer full.
const STATUS_OBF: u8 = 0x01;
/// Status: system flag (POST passed).
const STATUS_SYS: u8 = 0x04;
/// Status: last write was a command.
const STATUS_CMD: u8 = 0x08;

/// The controller's state; a snapshot holds it as it is.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042 {
    status: u8,
    ctr: u8,
    outp: u8,
    output: Option<u8>,
    pending: Option<u8>,
}

impl I8042 {
    /// Guest read of `port`.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            I8042_PORT_COMMAND => {
                let obf = if self.output.is_some() { STATUS_OBF } else { 0 };
                self.status | STATUS_SYS | obf
            }
            I8042_PORT_DATA => self.output.take().unwrap_or(0),
            _ => 0xff,
        }
    }

    /// Guest write of `value` to `port`.
    pub fn write(&mut self, port: u16, value: u8) -> DeviceAction {
        match port {
            I8042_PORT_COMMAND => {
                self.status |= STATUS_CMD;
                match value {
                    CMD_RESET_CPU => return DeviceAction::Reset,
                    CMD_READ_CTR => self.output = Some(self.ctr),
                    CMD_READ_OUTP => self.output = Some(self.outp),
                    CMD_SELF_TEST => self.output = Some(SELF_TEST_OK),
                    CMD_WRITE_CTR | CMD_WRITE_OUTP => self.pending = Some(value),
                    _ => {}
                }
            }
            I8042_PORT_DATA => {
                self.status &= !STATUS_CMD;
                match self.pending.take() {
                    Some(CMD_WRITE_CTR) => self.ctr = value,
                    Some(CMD_WRITE_OUTP) => {
                        self.outp = value;
                        // Output port bit 0 low resets the CPU.
                        if value & 1 == 0 {
                            return DeviceAction::Reset;
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        DeviceAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_ends_the_vm() {
        let mut k = I8042::default();
        // reboot=k waits for the input buffer (status bit 1) to be clear.
        assert_eq!(k.read(I8042_PORT_COMMAND) & 0x02, 0);
        assert_eq!(k.write(I8042_PORT_COMMAND, 0xfe), DeviceAction::Reset);
    }

    #[test]
    fn answers_ctr_and_self_test() {
        let mut k = I8042::default();
        assert_eq!(k.read(I8042_PORT_COMMAND) & STATUS_OBF, 0);
        assert_eq!(
            k.write(I8042_PORT_COMMAND, CMD_WRITE_CTR),
            DeviceAction::Continue
        );
        assert_eq!(k.write(I8042_PORT_DATA, 0x47), DeviceAction::Continue);
        k.write(I8042_PORT_COMMAND, CMD_READ_CTR);
        assert_eq!(k.read(I8042_PORT_COMMAND) & STATUS_OBF, STATUS_OBF);
        assert_eq!(k.read(I8042_PORT_DATA), 0x47);
        assert_eq!(k.read(I8042_PORT_COMMAND) & STATUS_OBF, 0);
        k.write(I8042_PORT_COMMAND, CMD_SELF_TEST);
        assert_eq!(k.read(I8042_PORT_DATA), SELF_TEST_OK);
        // Other commands are ignored.
        assert_eq!(k.write(I8042_PORT_COMMAND, 0xad), DeviceAction::Continue);
    }

    #[test]
    fn output_port_reset_bit_resets() {
        let mut k = I8042::default();
        k.write(I8042_PORT_COMMAND, CMD_WRITE_OUTP);
        assert_eq!(k.write(I8042_PORT_DATA, 0xfe), DeviceAction::Reset);
    }
}
