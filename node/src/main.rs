//! The `passerelle` binary: parses the command line and hands over to the node library.

fn main() -> std::process::ExitCode {
    passerelle_node::main_entry()
}
