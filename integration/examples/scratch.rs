use std::time::{Duration, Instant};
use vessel_integration::agent::container_spec;
use vessel_integration::{AgentVm, Container};
fn main() -> anyhow::Result<()> {
    let vm = AgentVm::boot(Duration::from_secs(60))?;
    let client = vm.client();
    let c = Container::create(client, "cat", &container_spec(&["sh", "-c", "cat > /dev/null"]))?;
    c.start()?;
    let mode = std::env::var("MODE").unwrap_or_default();
    let second = vm.connect(Duration::from_secs(60))?;
    let _reader = if mode == "read" {
        let c2 = Container::create(client, "sleeper", &container_spec(&["sleep", "100"]))?;
        c2.start()?;
        Some(std::thread::spawn(move || {
            let r = second.service().read_stdout(second.context(), &{
                let mut q = vessel_agent_protocol::agent::ReadStreamRequest::new();
                q.container_id = "sleeper".into();
                q
            });
            eprintln!("reader: {:?}", r.map(|r| r.data.len()));
            drop(c2);
        }))
    } else { None };
    std::thread::sleep(Duration::from_secs(1));
    for size in [100usize, 1000, 4096, 8192, 16384, 32768, 65536, 65536, 65536, 65536, 65536, 65536] {
        let data = vec![b'x'; size];
        let t = Instant::now();
        let r = client.write_stdin("cat", "", &data);
        eprintln!("size {size}: {:?} {:?}", r.as_ref().map_err(|e| format!("{e:#}")), t.elapsed());
    }
    let _ = client.close_stdin("cat", "");
    eprintln!("VMM LOG:\n{}", vm.vmm_log());
    std::process::exit(0);
}
