#!/bin/sh
# Run by the postgres image at first start (docker-compose.yml, profile `scale`): streaming
# replication needs its own pg_hba line ("all" does not match it).
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
