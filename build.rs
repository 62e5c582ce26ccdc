//! Host builds compile the C shim (netbsd-glue/) against the simulated
//! domU's stand-ins of the NetBSD kernel headers (tests/sim/include), so
//! the very C that goes into balloon.kmod runs in the host tests. Kernel
//! builds skip this: there bsd.kmodule.mk (or modules/balloon/
//! cross-build.sh) compiles the shim against the real headers.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=netbsd-glue");
    println!("cargo:rerun-if-changed=tests/sim/include");
    let target = env::var("TARGET").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "none" || target.contains("netbsd-kernel") {
        return;
    }
    cc::Build::new()
        .files([
            "netbsd-glue/balloon_shim.c",
            "netbsd-glue/balloon_physseg_array.c",
            "netbsd-glue/balloon_physseg_hotplug.c",
        ])
        .include("netbsd-glue")
        .include("tests/sim/include")
        .flag("-std=gnu11")
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Wmissing-prototypes")
        .flag("-Werror")
        .compile("balloon_shim");
}
