fn main() {
    std::process::exit(repeatr::cli::main());
}
