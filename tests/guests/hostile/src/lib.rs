//! A guest that misbehaves on purpose, one endpoint per kind of misbehaviour. The tests
//! check that each gets its documented status and error code and that the runner keeps
//! serving well-behaved guests.

use std::hint::black_box;

use palisade_sdk::http::{Request, Response, Router};

fn handle(request: Request) -> Response {
    Router::new()
        .get("/ok", |_| Response::text(200, "ok"))
        .get("/loop", |_| spin())
        .get("/alloc", |_| allocate_forever())
        .get("/alloc/:mib", allocate_mib)
        .get("/panic", |_| panic!("deliberate panic"))
        .get("/stack", |_| {
            let depth = recurse(black_box(u64::MAX));
            Response::text(200, depth.to_string())
        })
        .get("/exit", |_| std::process::exit(3))
        .get("/logs/:n", many_logs)
        .get("/sandbox", |_| sandbox())
        .handle(request)
}

fn spin() -> Response {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn allocate_forever() -> Response {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 1 << 20]);
        black_box(&blocks);
    }
}

/// Allocates and touches `mib` MiB, answering the number of bytes held.
fn allocate_mib(request: Request) -> Response {
    let mib: usize = request
        .param("mib")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    let block = vec![7u8; mib << 20];
    Response::text(200, black_box(&block).len().to_string())
}

fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let buffer = black_box([n; 64]);
    recurse(black_box(n - 1)) + buffer[3] % 2
}

fn many_logs(request: Request) -> Response {
    let n: usize = request.param("n").and_then(|m| m.parse().ok()).unwrap_or(1);
    for i in 0..n {
        palisade_sdk::log::info(&format!("line {i}"));
        println!("stdout line {i}");
    }
    Response::text(200, n.to_string())
}

/// Reports what the sandbox lets the guest see of the environment and the filesystem.
fn sandbox() -> Response {
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args: Vec<String> = std::env::args().collect();
    let root = std::fs::read_dir("/")
        .map(|_| "readable")
        .unwrap_or("denied");
    let etc = std::fs::read("/etc/passwd")
        .map(|_| "readable")
        .unwrap_or("denied");
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "none".into());
    Response::json(
        200,
        &serde_json::json!({ "env": env, "args": args, "root": root, "etc_passwd": etc, "cwd": cwd }),
    )
}

palisade_sdk::export_handler!(handle);
