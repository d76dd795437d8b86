use std::time::Duration;
use vessel_integration::agent::container_spec;
use vessel_integration::{AgentVm, Container};
fn main() -> anyhow::Result<()> {
    let vm = AgentVm::boot(Duration::from_secs(120))?;
    let client = vm.client();
    let t = std::time::Instant::now();
    let r = Container::run(client, "echo1", &container_spec(&["echo", "hello"]));
    println!("run: {:?} in {:?}", r.as_ref().map(|o| o.stdout_text()), t.elapsed());
    println!("{}", vm.console_tail(60));
    Ok(())
}
