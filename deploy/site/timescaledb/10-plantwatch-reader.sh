#!/bin/sh
# Runs once, when the database volume is created (docker-entrypoint-initdb.d), as the database
# superuser: creates the read-only role Grafana logs in with, with the site's password.
# plantwatch's migration 002 then finds the role and grants it SELECT on what dashboards read,
# read-only session defaults and a 10 s statement timeout. To change the password later:
#   docker compose exec timescaledb psql -U plantwatch -c "ALTER ROLE plantwatch_reader PASSWORD '...'"
# and update PLANTWATCH_READER_PASSWORD in .env (Grafana reads it at start).
set -eu
: "${PLANTWATCH_READER_PASSWORD:?PLANTWATCH_READER_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader_password="$PLANTWATCH_READER_PASSWORD" <<'SQL'
CREATE ROLE plantwatch_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 20
    PASSWORD :'reader_password';
SQL
