# A stand-in for the official redis image (redis:7.2-bookworm, which Airflow's official compose file uses as the
# CeleryExecutor's broker), built from Debian's redis-server 7.0, for make docker-test on machines that reach no image
# registry. It copies what docker/compose.yaml relies on: `redis-server` on port 6379 of every address of the
# container with protected mode off (the official image's entrypoint turns it off when no config file is given;
# the network is the compose project's own), nothing saved to disk, and `redis-cli ping` for the health check.
ARG BASE_IMAGE=grid-resume-test/bookworm-minbase:latest
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--bind", "*", "-::*", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
