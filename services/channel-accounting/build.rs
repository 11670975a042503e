//! The migrations are compiled in (`refinery::embed_migrations!`), and cargo
//! does not see a new file in their folder as a change: without this, an
//! added migration is left out of the binary until something else changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
