//! One module per subcommand; each takes the parsed arguments and the loaded config.

pub mod proxy;
