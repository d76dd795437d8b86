//! The stdio calls: ReadStdout/ReadStderr, WriteStdin, CloseStdin and
//! TtyWinResize, on a container's init or exec.

use super::error::ContainerError;
use super::stdio::Output;
use super::Engine;

impl Engine {
    /// Reads output; blocks until some is there, empty at EOF.
    pub fn read_output(
        &self,
        id: &str,
        exec_id: &str,
        which: Output,
        max: usize,
    ) -> Result<Vec<u8>, ContainerError> {
        let process = self.get(id)?.process(exec_id)?;
        process
            .stdio
            .read(which, max)
            .map_err(ContainerError::sys("reading the process's output"))
    }

    /// Writes to stdin; returns the bytes written (all of them).
    pub fn write_stdin(
        &self,
        id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize, ContainerError> {
        let process = self.get(id)?.process(exec_id)?;
        process.stdio.write_stdin(data).map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => {
                ContainerError::InvalidRequest(format!("stdin of {id:?}/{exec_id:?} is closed"))
            }
            _ => ContainerError::sys("writing the process's stdin")(e),
        })
    }

    /// Closes stdin.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ContainerError> {
        let process = self.get(id)?.process(exec_id)?;
        process
            .stdio
            .close_stdin()
            .map_err(ContainerError::sys("closing the process's stdin"))
    }

    /// Resizes the process's terminal.
    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), ContainerError> {
        let (Ok(rows), Ok(columns)) = (u16::try_from(rows), u16::try_from(columns)) else {
            return Err(ContainerError::InvalidRequest(format!(
                "terminal size {rows}x{columns} is too large"
            )));
        };
        let process = self.get(id)?.process(exec_id)?;
        if !process.stdio.is_tty() {
            return Err(ContainerError::InvalidRequest(format!(
                "{id:?}/{exec_id:?} has no terminal"
            )));
        }
        process
            .stdio
            .resize(rows, columns)
            .map_err(ContainerError::sys("resizing the terminal"))
    }
}
