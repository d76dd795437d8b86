//! [`TaskEvent`]s as containerd's events: a topic and a message.

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};

use super::timestamp;
use crate::domain::TaskEvent;

fn boxed<E: Event + 'static>(e: E) -> (String, Box<dyn MessageDyn>) {
    (e.topic(), Box::new(e))
}

/// The topic and message of an event.
pub fn event(e: TaskEvent) -> (String, Box<dyn MessageDyn>) {
    match e {
        TaskEvent::Create {
            id,
            bundle,
            stdio,
            pid,
        } => {
            let mut io = TaskIO::new();
            io.stdin = stdio.stdin;
            io.stdout = stdio.stdout;
            io.stderr = stdio.stderr;
            io.terminal = stdio.terminal;
            let mut m = TaskCreate::new();
            m.container_id = id;
            m.bundle = bundle;
            m.io = MessageField::some(io);
            m.pid = pid;
            boxed(m)
        }
        TaskEvent::Start { id, pid } => {
            let mut m = TaskStart::new();
            m.container_id = id;
            m.pid = pid;
            boxed(m)
        }
        TaskEvent::Exit {
            id,
            exec_id,
            pid,
            exit,
        } => {
            let mut m = TaskExit::new();
            // containerd names the init process by the container id.
            m.id = if exec_id.is_empty() {
                id.clone()
            } else {
                exec_id
            };
            m.container_id = id;
            m.pid = pid;
            m.exit_status = exit.status;
            m.exited_at = MessageField::some(timestamp(exit.at));
            boxed(m)
        }
        TaskEvent::Delete { id, pid, exit } => {
            let mut m = TaskDelete::new();
            m.id = id.clone();
            m.container_id = id;
            m.pid = pid;
            m.exit_status = exit.status;
            m.exited_at = MessageField::some(timestamp(exit.at));
            boxed(m)
        }
        TaskEvent::Oom { id } => {
            let mut m = TaskOOM::new();
            m.container_id = id;
            boxed(m)
        }
        TaskEvent::ExecAdded { id, exec_id } => {
            let mut m = TaskExecAdded::new();
            m.container_id = id;
            m.exec_id = exec_id;
            boxed(m)
        }
        TaskEvent::ExecStarted { id, exec_id, pid } => {
            let mut m = TaskExecStarted::new();
            m.container_id = id;
            m.exec_id = exec_id;
            m.pid = pid;
            boxed(m)
        }
        TaskEvent::Paused { id } => {
            let mut m = TaskPaused::new();
            m.container_id = id;
            boxed(m)
        }
        TaskEvent::Resumed { id } => {
            let mut m = TaskResumed::new();
            m.container_id = id;
            boxed(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use containerd_shim::protos::protobuf::Message;

    use super::*;
    use crate::domain::Exit;

    #[test]
    fn exits_name_the_init_process_by_container_id() {
        let exit = Exit {
            status: 3,
            at: UNIX_EPOCH + std::time::Duration::from_millis(1500),
        };
        let (topic, msg) = event(TaskEvent::Exit {
            id: "c".into(),
            exec_id: String::new(),
            pid: 7,
            exit,
        });
        assert_eq!(topic, "/tasks/exit");
        let bytes = msg.write_to_bytes_dyn().unwrap();
        let back = TaskExit::parse_from_bytes(&bytes).unwrap();
        assert_eq!(
            (
                back.id.as_str(),
                back.container_id.as_str(),
                back.exit_status
            ),
            ("c", "c", 3)
        );
        assert_eq!(
            (back.exited_at.seconds, back.exited_at.nanos),
            (1, 500_000_000)
        );
    }
}
