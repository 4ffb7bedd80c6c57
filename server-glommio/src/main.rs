//! `shorty-glommio`: the glommio backend. Not built yet (tracked in its own issue);
//! this shell only keeps the workspace layout in place.

fn main() {
    eprintln!("shorty-glommio is not implemented yet; use shorty-uring");
    std::process::exit(2);
}
