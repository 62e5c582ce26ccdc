// SPDX-License-Identifier: BSD-2-Clause
//! Compiles the simulator's C helpers (variadic kernel functions, the
//! kthread trampoline, pglist helpers) and the C test module.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let files = [
        "csrc/sim_kernel.c",
        "csrc/testmod.c",
        "csrc/testwalk_hotplug.c",
        "csrc/testwalk_array.c",
    ];
    let mut b = cc::Build::new();
    b.include(format!("{dir}/include"))
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Werror")
        .flag("-std=gnu11");
    for f in files {
        b.file(format!("{dir}/{f}"));
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=include/balloon_host_kernel.h");
    b.compile("balloon_sim_c");
}
