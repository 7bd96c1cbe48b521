#!/bin/sh
# Runs once, when the database volume is created (docker-entrypoint-initdb.d), as the database
# superuser (postgres): what an administrator creates once for plantwatch (connectors/db_setup.py,
# deploy/README.md). The image's own init script has already run CREATE EXTENSION timescaledb in
# $POSTGRES_DB.
#   * plantwatch: the daemon's ordinary role (no superuser, no CREATEROLE); it owns the database
#     and applies its migrations itself at every start;
#   * plantwatch_reader: the read-only role Grafana logs in with, with its session defaults;
#     plantwatch's migration 002 grants it SELECT on what dashboards read.
# To change a password later:
#   docker compose exec timescaledb psql -U postgres -c "ALTER ROLE plantwatch_reader PASSWORD '...'"
# and update the matching variable in .env (Grafana reads PLANTWATCH_READER_PASSWORD at start).
set -eu
: "${PLANTWATCH_DB_PASSWORD:?PLANTWATCH_DB_PASSWORD is not set}"
: "${PLANTWATCH_READER_PASSWORD:?PLANTWATCH_READER_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v db="$POSTGRES_DB" -v app_password="$PLANTWATCH_DB_PASSWORD" \
     -v reader_password="$PLANTWATCH_READER_PASSWORD" <<'SQL'
CREATE ROLE plantwatch LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
CREATE ROLE plantwatch_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 20
    PASSWORD :'reader_password';
ALTER ROLE plantwatch_reader SET default_transaction_read_only = on;
ALTER ROLE plantwatch_reader SET statement_timeout = '10s';
ALTER ROLE plantwatch_reader SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE plantwatch_reader SET lock_timeout = '2s';
ALTER DATABASE :"db" OWNER TO plantwatch;
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
