//! Generates the bindings from netbsd-glue/glue.h at build time.
//!
//! Only the names of the glue ABI are let through (allowlists): the
//! `balloon_*` types, constants and the shim's `balloon_shim_*` functions.
//! The `balloon_rs_*` functions are the core's own exports; they are
//! defined in Rust, not imported. Enums become plain integer constants,
//! because a value that crosses from C is not trusted to be a valid Rust
//! enum. Layout assertions are kept: a struct that C and Rust see
//! differently fails the build.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let glue = manifest.join("../netbsd-glue/glue.h");
    println!("cargo:rerun-if-changed={}", glue.display());
    let bindings = bindgen::Builder::default()
        .header(glue.to_string_lossy())
        .use_core()
        .ctypes_prefix("cty")
        .allowlist_type("balloon_.*")
        .allowlist_var("BALLOON_.*")
        .allowlist_function("balloon_shim_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .layout_tests(true)
        .derive_default(true)
        .generate_comments(true)
        // x86-64 LP64 is the ABI of both NetBSD/amd64 and the host.
        .clang_arg("--target=x86_64-unknown-linux-gnu")
        .generate()
        .expect("bindgen could not read netbsd-glue/glue.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("out dir")).join("glue.rs");
    bindings.write_to_file(out).expect("write bindings");
}
