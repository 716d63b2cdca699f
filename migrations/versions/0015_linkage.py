"""deaths from three agencies: death records, linkage pairs, clusters, decisions; the linker role

Revision ID: 0015
Revises: 0014

Issue 21. ``death_record`` keeps every agency's record as it came (police, forensic
service, health registry), keyed on (source, source_id) like incidents: the deceased's
name parts (or HMAC tokens of them, ``names_hashed``) and ``person_key`` live in this
table only, readable by the ``linker`` role and admins. A linkage run is an
``analysis_run`` of kind ``linkage`` (its job, status and summary: parameters, m/u
probabilities, counts); its pairs, its clusters and the consolidated deaths hang on it and
go with it. ``linkage_decision`` keeps every linker's accept/reject, never updated in
place: the latest one of a pair is the one the next run respects.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE api_key DROP CONSTRAINT ck_api_key_role_known;
        ALTER TABLE api_key ADD CONSTRAINT ck_api_key_role_known
            CHECK (role IN ('viewer', 'analyst', 'editor', 'admin', 'linker'));

        CREATE TABLE death_record (
            id bigserial CONSTRAINT pk_death_record PRIMARY KEY,
            source text NOT NULL,
            source_id text NOT NULL,
            given_name text,
            family_name text,
            person_key text,
            names_hashed boolean NOT NULL DEFAULT false,
            sex text CONSTRAINT ck_death_record_sex_known
                CHECK (sex IN ('female', 'male', 'unknown')),
            age smallint CONSTRAINT ck_death_record_age_range CHECK (age BETWEEN 0 AND 130),
            birth_date date,
            death_date date,
            registered_at date,
            geom geometry(POINT, 4326),
            location_precision text,
            unit_code text,
            manner_raw text,
            manner text CONSTRAINT ck_death_record_manner_known CHECK (manner IN
                ('homicide', 'suicide', 'accident', 'undetermined', 'natural', 'other')),
            icd10 text,
            iccs text,
            attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
            import_batch_id integer,
            import_batch_ids integer[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_death_record_source_source_id UNIQUE (source, source_id)
        );
        CREATE INDEX ix_death_record_death_date ON death_record (death_date);

        CREATE TABLE linkage_pair (
            id bigserial CONSTRAINT pk_linkage_pair PRIMARY KEY,
            run_id integer NOT NULL CONSTRAINT fk_linkage_pair_run_id_analysis_run
                REFERENCES analysis_run (id) ON DELETE CASCADE,
            record_l bigint NOT NULL,
            record_r bigint NOT NULL,
            match_probability double precision,
            match_weight double precision,
            band text NOT NULL CONSTRAINT ck_linkage_pair_band_known
                CHECK (band IN ('match', 'uncertain', 'non_match')),
            decided text CONSTRAINT ck_linkage_pair_decided_known
                CHECK (decided IN ('accept', 'reject')),
            CONSTRAINT ck_linkage_pair_ordered CHECK (record_l < record_r)
        );
        CREATE INDEX ix_linkage_pair_run_id_band ON linkage_pair (run_id, band);

        CREATE TABLE linkage_cluster (
            run_id integer NOT NULL CONSTRAINT fk_linkage_cluster_run_id_analysis_run
                REFERENCES analysis_run (id) ON DELETE CASCADE,
            record_id bigint NOT NULL,
            cluster_id bigint NOT NULL,
            CONSTRAINT pk_linkage_cluster PRIMARY KEY (run_id, record_id)
        );
        CREATE INDEX ix_linkage_cluster_run_id_cluster_id ON linkage_cluster (run_id, cluster_id);

        CREATE TABLE linkage_death (
            run_id integer NOT NULL CONSTRAINT fk_linkage_death_run_id_analysis_run
                REFERENCES analysis_run (id) ON DELETE CASCADE,
            cluster_id bigint NOT NULL,
            n_records integer NOT NULL,
            sources text NOT NULL,
            n_sources integer NOT NULL,
            in_police boolean NOT NULL,
            in_forensic boolean NOT NULL,
            in_health boolean NOT NULL,
            manner_police text,
            manner_forensic text,
            manner_health text,
            manners_disagree boolean NOT NULL,
            manner text,
            manner_from text,
            death_date date,
            unit_code text,
            same_source_duplicates boolean NOT NULL,
            CONSTRAINT pk_linkage_death PRIMARY KEY (run_id, cluster_id)
        );
        CREATE INDEX ix_linkage_death_run_id_death_date ON linkage_death (run_id, death_date);

        CREATE TABLE linkage_decision (
            id serial CONSTRAINT pk_linkage_decision PRIMARY KEY,
            record_l bigint NOT NULL,
            record_r bigint NOT NULL,
            decision text NOT NULL CONSTRAINT ck_linkage_decision_decision_known
                CHECK (decision IN ('accept', 'reject')),
            note text,
            pair_id bigint,
            run_id integer,
            decided_by text NOT NULL,
            decided_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_linkage_decision_ordered CHECK (record_l < record_r)
        );
        CREATE INDEX ix_linkage_decision_record_l_record_r
            ON linkage_decision (record_l, record_r);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE linkage_decision;
        DROP TABLE linkage_death;
        DROP TABLE linkage_cluster;
        DROP TABLE linkage_pair;
        DELETE FROM analysis_run WHERE kind = 'linkage';
        DROP TABLE death_record;
        UPDATE api_key SET revoked_at = now() WHERE role = 'linker' AND revoked_at IS NULL;
        UPDATE api_key SET role = 'viewer' WHERE role = 'linker';
        ALTER TABLE api_key DROP CONSTRAINT ck_api_key_role_known;
        ALTER TABLE api_key ADD CONSTRAINT ck_api_key_role_known
            CHECK (role IN ('viewer', 'analyst', 'editor', 'admin'));
        """
    )
