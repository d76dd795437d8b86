//! Generates the agent API (messages and ttrpc stubs) into OUT_DIR with the
//! pure-Rust parser of ttrpc-codegen: no `protoc` needed.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out_dir)
        .inputs(["proto/agent.proto"])
        .include("proto")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize::default())
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generating the agent API from proto/agent.proto");

    // The generated files start with inner attributes (`#![allow(..)]`) and inner doc comments, which
    // `include!` inside a module rejects; src/lib.rs puts the allows on the
    // enclosing modules instead.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = Path::new(&out_dir).join(name);
        let text = std::fs::read_to_string(&path).expect("reading generated code");
        let kept: String = text
            .lines()
            .filter(|line| {
                let line = line.trim_start();
                !line.starts_with("#![") && !line.starts_with("//!")
            })
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&path, kept).expect("writing generated code");
    }
}
