# A stand-in for apache/airflow:3.3.2-python3.11, built from Debian packages, for make docker-test on machines
# that reach no image registry. It copies what docker/Dockerfile relies on in the official image: the airflow user
# (uid 50000, group 0, home /home/airflow), Airflow installed with pip --user into /home/airflow/.local (with the
# providers of the official image this project uses: amazon, postgres, celery) with the
# constraints kept in /home/airflow/constraints.txt, AIRFLOW_HOME=/opt/airflow, AIRFLOW_VERSION, and an
# entrypoint run by dumb-init that passes `bash ...`, `python ...` and `airflow ...` through and runs anything else
# as an airflow subcommand. Not for production: the official image is.
ARG BASE_IMAGE=grid-resume-test/bookworm-minbase:latest

FROM ${BASE_IMAGE} AS system
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3.11 python3-pip ca-certificates dumb-init \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -sf /usr/bin/python3 /usr/local/bin/python \
    && useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow && chown airflow:0 /opt/airflow && chmod 775 /opt/airflow
ENV AIRFLOW_VERSION=3.3.2 AIRFLOW_HOME=/opt/airflow AIRFLOW_USER_HOME_DIR=/home/airflow AIRFLOW_UID=50000 \
    PIP_USER=true PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/home/airflow/.local/bin:${PATH}

# pip runs here with the build machine's CA bundle (build-ca/ca.crt, put in the build context by
# scripts/docker-test.sh when the host has one):
# this stage is thrown away, so the bundle never reaches the image.
FROM system AS install
COPY --chown=airflow:0 constraints.txt /home/airflow/constraints.txt
COPY build-ca/ /tmp/build-ca/
USER airflow
RUN if [ -f /tmp/build-ca/ca.crt ]; then export PIP_CERT=/tmp/build-ca/ca.crt; fi \
    && pip install --user --no-warn-script-location -c /home/airflow/constraints.txt \
       "apache-airflow[postgres,amazon,celery]==${AIRFLOW_VERSION}"

FROM system
COPY --from=install --chown=airflow:0 /home/airflow /home/airflow
COPY airflow-entrypoint.sh /entrypoint
USER airflow
WORKDIR /opt/airflow
EXPOSE 8080
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
