//! `sqlx::migrate!` embeds `migrations/` at compile time; rebuild when a
//! migration is added or changed (stable Rust cannot track the folder from
//! the macro itself).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
