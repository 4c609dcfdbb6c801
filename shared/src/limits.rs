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
/// Longest SOP deadline (acknowledge or accept), in hours: ten years. Deadlines are added to
/// referral times when a view is read; an unbounded one overflows the date.
pub const SOP_DEADLINE_MAX_HOURS: u32 = 10 * 366 * 24;
/// Scrypt work factor (log2 N) used when protecting a secret file with a passphrase.
pub const PASSPHRASE_SCRYPT_LOG_N: u8 = 16;
/// Highest scrypt work factor accepted when opening a passphrase-protected file: bounds the
/// memory and time a crafted file can make us spend.
pub const PASSPHRASE_SCRYPT_LOG_N_MAX: u8 = 20;
/// Largest event header (postcard bytes), in bytes.
pub const EVENT_HEADER_SIZE_MAX_BYTES: usize = 4096;
/// Largest event body (ciphertext, or a map change or snapshot), in bytes.
pub const EVENT_BODY_SIZE_MAX_BYTES: usize = 256 * 1024;
/// Largest encoded event (header, signature, body and framing), in bytes.
pub const EVENT_WIRE_SIZE_MAX_BYTES: usize =
    EVENT_HEADER_SIZE_MAX_BYTES + EVENT_BODY_SIZE_MAX_BYTES + 128;
/// Most dependencies one event may name.
pub const EVENT_DEPS_MAX: usize = 16;
/// Most organisations one event may address (one age stanza each).
pub const EVENT_ORGS_MAX: usize = 16;
/// Largest decrypted case payload, in bytes.
pub const PAYLOAD_SIZE_MAX_BYTES: usize = 192 * 1024;
/// Longest free-text field in a case (a note, a summary), in characters.
pub const TEXT_FIELD_MAX_CHARS: usize = 8000;
/// Longest short field in a case (a name, a phone number), in characters.
pub const SHORT_FIELD_MAX_CHARS: usize = 200;
/// Most items in one list of a case (needs, vulnerabilities, languages, scope entries).
pub const LIST_ITEMS_MAX: usize = 64;
/// Most referrals of a box the web UI's inbox and outbox pages show, the newest (a node holding
/// a mechanism's years of referrals must not build them all for one page).
pub const REFERRAL_PAGE_ROWS: usize = 200;
/// Most cases the web UI's case list shows, the most recently active.
pub const CASE_PAGE_ROWS: usize = 200;
/// Most events of endorsed authors held back at admission (waiting for a configuration
/// version, an earlier event of their author, or their time to come); past it an event is not
/// held (it comes again with a later sync) and its batch goes on.
pub const HELD_EVENTS_MAX: u64 = 100_000;
/// Most events of one endorsed author held back at once.
pub const HELD_PER_AUTHOR_MAX: u64 = 10_000;
/// Most events held back from authors no configuration held endorses (perhaps nodes of a
/// version still to come; perhaps anyone with a key), in all.
pub const HELD_STRANGERS_MAX: u64 = 4_096;
/// Most events held back from one such author.
pub const HELD_PER_STRANGER_MAX: u64 = 64;
/// How long an event stays held before it is dropped, in milliseconds (14 days).
pub const HELD_EXPIRY_MS: u64 = 14 * 24 * 3600 * 1000;
/// Most held events retried or expired by one call as time passes.
pub const HELD_RETRY_PER_CALL_MAX: usize = 4_096;
/// Most equivocation evidence records kept per author.
pub const EQUIVOCATIONS_PER_AUTHOR_MAX: usize = 16;
/// Most threads one batch operation (verification, encryption) spreads over.
pub const BATCH_THREADS_MAX: usize = 8;

/// The number of cores to spread a batch over, read once (the standard library reads cgroup
/// files on every call, which costs more than a small batch's work).
pub fn batch_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(BATCH_THREADS_MAX)
    })
}
/// Largest sync message (a request or a response), in bytes.
pub const SYNC_MESSAGE_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Largest batch of events in one sync response or push, in bytes (one larger event still goes
/// alone).
pub const SYNC_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// Most events in one sync batch.
pub const SYNC_BATCH_EVENTS_MAX: usize = 4096;
/// Most batches (fetched and pushed) one sync round moves before it ends; the next round goes
/// on from where it stopped. Bounds a round whatever the peer answers.
pub const SYNC_ROUND_BATCHES_MAX: usize = 256;
/// Most bytes of events one sync round fetches before it ends (the next round goes on).
pub const SYNC_ROUND_MAX_BYTES: usize = 128 * 1024 * 1024;
/// Most authors in one version vector (and ranges in one request).
pub const SYNC_AUTHORS_MAX: usize = 50_000;
/// Most events one bundle may carry.
pub const BUNDLE_EVENTS_MAX: u64 = 50_000_000;
/// Largest bundle header (mostly the configuration chain), in bytes.
pub const BUNDLE_HEADER_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Most services in one organisation's profile.
pub const PROFILE_SERVICES_MAX: usize = 500;
/// Highest Automerge operation counter a partner-map change may reach: the counter grows with
/// the document's causal history, so this bounds the operations each node's history holds in
/// one organisation's document (an honest import of 500 services is about 15,000 operations).
pub const MAP_DOC_OPS_MAX: u64 = 1_000_000;
/// Most Automerge dependencies one partner-map change may name (the heads of the document it
/// was made on: about one per node of the organisation).
pub const MAP_CHANGE_DEPS_MAX: usize = 64;
/// Most Automerge changes one partner-map snapshot may carry.
pub const MAP_CHANGES_PER_SNAPSHOT_MAX: usize = 100_000;
/// Changes appended to a stored partner-map document before it is saved compacted again.
pub const MAP_CHUNKS_MAX: usize = 64;
/// Partner-map documents kept loaded in memory between events.
pub const MAP_CACHE_DOCS_MAX: usize = 64;
/// The store's page cache by default, in MiB: redb's own default is 1 GiB, which a long-running
/// daemon fills and keeps whatever the laptop has. 64 MiB holds the interior pages of the
/// tables of millions of events (what every lookup touches); `passerelle run --cache-mib` sets
/// another.
pub const STORE_CACHE_MIB_DEFAULT: usize = 64;
/// The bounds `--cache-mib` accepts.
pub const STORE_CACHE_MIB_MIN: usize = 4;
pub const STORE_CACHE_MIB_MAX: usize = 16 * 1024;
/// Requests remembered by their idempotency key (the oldest are forgotten past it).
pub const REQUESTS_KEPT_MAX: u64 = 10_000;
/// Largest partner-map profile file, in bytes.
pub const PROFILE_FILE_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// Largest file of an HSDS package `map import --hsds` reads (one table, or compiled JSON).
pub const HSDS_FILE_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;
