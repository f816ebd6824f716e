-- online-safe
-- Initial schema: items, the job queue and worker heartbeats.
CREATE TABLE items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE jobs (
    id serial PRIMARY KEY,
    payload text,
    status text NOT NULL DEFAULT 'pending',
    done_by_release text,
    done_by_host text,
    created_at timestamptz DEFAULT now(),
    done_at timestamptz
);

CREATE INDEX jobs_pending_idx ON jobs (id) WHERE status = 'pending';

CREATE TABLE worker_heartbeats (
    host text PRIMARY KEY,
    release text,
    pid int,
    seen_at timestamptz
);
