//! Every bound Passerelle enforces, in one place, named with their units last.
//!
//! An input past one of these bounds gets a clear error; nothing in the code path allocates
//! according to a length an input claims before it has been checked against the bound here.

/// Largest configuration document (the TOML text) accepted, in bytes.
pub const DOCUMENT_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// Largest signed configuration file (document plus signatures, JSON), in bytes.
pub const SIGNED_FILE_SIZE_MAX_BYTES: usize = 2 * 1024 * 1024 + 64 * 1024;
/// Most signatures carried beside one configuration document.
pub const SIGNATURES_PER_DOCUMENT_MAX: usize = 64;
/// Most root keys a configuration may name.
pub const ROOT_KEYS_MAX: usize = 32;
/// Most configuration files given to one `verify`, `join` or `update` call.
pub const CHAIN_FILES_MAX: usize = 1024;
/// Largest secret key file (node identity, organisation key, root key), in bytes.
pub const KEY_FILE_SIZE_MAX_BYTES: usize = 256 * 1024;
/// Largest passphrase file, in bytes.
pub const PASSPHRASE_FILE_SIZE_MAX_BYTES: usize = 4096;
/// Largest stanza or small TOML input file (a node stanza handed to `org endorse`), in bytes.
pub const STANZA_FILE_SIZE_MAX_BYTES: usize = 64 * 1024;
/// Most encryption key epochs one organisation may have.
pub const KEY_EPOCHS_MAX: u32 = 4096;
/// Longest identifier (organisation, site, category, case type), in characters.
pub const ID_LENGTH_MAX_CHARS: usize = 64;
/// Longest display name or label, in characters.
pub const NAME_LENGTH_MAX_CHARS: usize = 200;
/// Scrypt work factor (log2 N) used when protecting a secret file with a passphrase.
pub const PASSPHRASE_SCRYPT_LOG_N: u8 = 16;
/// Highest scrypt work factor accepted when opening a passphrase-protected file: bounds the
/// memory and time a crafted file can make us spend.
pub const PASSPHRASE_SCRYPT_LOG_N_MAX: u8 = 20;
