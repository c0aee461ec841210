# A stand-in for the official postgres image, built from Debian's PostgreSQL 15, for make docker-test on machines
# that reach no image registry. It copies what docker/compose.yaml relies on: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB create the cluster on first start in /var/lib/postgresql/data, password logins over TCP, pg_isready.
ARG BASE_IMAGE=grid-resume-test/bookworm-minbase:latest
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8 PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:${PATH}
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p "${PGDATA}" /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql && chmod 700 "${PGDATA}"
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
