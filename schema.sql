-- chatfiles schema, applied at every start; every statement is idempotent.
-- The version lives in PRAGMA user_version (set by the code after this script); later changes
-- are added as numbered migrations in src/db.rs.
-- Timestamps are Unix seconds (UTC); the API formats them as RFC 3339.

CREATE TABLE IF NOT EXISTS neptun_user (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    primary_email TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    -- Bumped to end every session of the user at once (a new password); see session.user_epoch.
    session_epoch INTEGER NOT NULL DEFAULT 0,
    -- Set by `chatfiles user disable`: the account may not log in.
    disabled_at   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS chat_conversation (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    neptun_user_id INTEGER NOT NULL REFERENCES neptun_user (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    model          TEXT    NOT NULL DEFAULT 'default',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- GET /api/users/{id}/chats: newest first, ties by id.
CREATE INDEX IF NOT EXISTS chat_conversation_by_user
    ON chat_conversation (neptun_user_id, updated_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS chat_conversation_file (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_conversation_id INTEGER NOT NULL REFERENCES chat_conversation (id) ON DELETE CASCADE,
    -- Random name of the stored object under <storage>/objects; never the user's file name.
    object_key           TEXT    NOT NULL UNIQUE,
    name                 TEXT    NOT NULL,
    size                 INTEGER NOT NULL CHECK (size >= 0),
    type                 TEXT    NOT NULL,
    sha256               TEXT    NOT NULL,
    created_at           INTEGER NOT NULL
);

-- Neptun's Chat Files endpoint: a chat's files in upload order.
CREATE INDEX IF NOT EXISTS chat_conversation_file_by_chat
    ON chat_conversation_file (chat_conversation_id, created_at, id);

-- Objects that may exist in the object store with no file row to keep them: a key is recorded
-- before an upload writes its bytes and when a delete removes its row, and cleared in the
-- transaction that inserts the row or once the bytes are removed. The start-up sweep removes
-- whatever is left, so that it never has to list the whole bucket.
CREATE TABLE IF NOT EXISTS pending_object (
    object_key TEXT    PRIMARY KEY,
    since      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS session (
    -- SHA-256 of the opaque id in the cookie: a copy of the database holds no usable session.
    id_hash        TEXT    PRIMARY KEY,
    neptun_user_id INTEGER REFERENCES neptun_user (id) ON DELETE CASCADE,
    -- The user's session_epoch at login; a session from an older epoch is dead.
    user_epoch     INTEGER NOT NULL DEFAULT 0,
    state          TEXT    NOT NULL,
    expires_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS session_by_expiry ON session (expires_at);
CREATE INDEX IF NOT EXISTS session_by_user ON session (neptun_user_id);

-- Resumable (tus) uploads. An unfinished upload's bytes are in <storage>/uploads/<id>, of which
-- `received` bytes are acknowledged (fsync'd); its full `length` counts against the quota from
-- creation. Once complete it points at the file it became (`file_id`), and the row stays as the
-- upload's record until `expires_at`, when every upload row goes.
CREATE TABLE IF NOT EXISTS upload (
    -- 128 random bits as lowercase hex: the unguessable id in the upload's URL.
    id                   TEXT    PRIMARY KEY,
    chat_conversation_id INTEGER NOT NULL REFERENCES chat_conversation (id) ON DELETE CASCADE,
    -- The sanitised file name and the type the file will have (before any charset).
    name                 TEXT    NOT NULL,
    type                 TEXT    NOT NULL,
    -- The Upload-Metadata header as the client sent it (HEAD repeats it); NULL without one.
    metadata             TEXT,
    length               INTEGER NOT NULL CHECK (length >= 0),
    received             INTEGER NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    file_id              INTEGER REFERENCES chat_conversation_file (id) ON DELETE CASCADE,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS upload_by_chat ON upload (chat_conversation_id);
CREATE INDEX IF NOT EXISTS upload_by_expiry ON upload (expires_at);
CREATE INDEX IF NOT EXISTS upload_by_file ON upload (file_id) WHERE file_id IS NOT NULL;
