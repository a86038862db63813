# The broker server's RabbitMQ image, built offline from Debian's rabbitmq-server package, for
# clouds that cannot pull the official image (docker.io/library/rabbitmq:3.13.7-management, the
# stack's default amqpBrokerImage). Laid out where infra/broker.py's unit expects the official
# image's paths:
#   /etc/rabbitmq/conf.d/*.conf   the stack's rabbitmq.conf (RabbitMQ >= 3.9 reads conf.d by default)
#   /etc/rabbitmq/definitions.json, /etc/rabbitmq/tls/   mounted read-only by the unit
#   /var/lib/rabbitmq             the data (mnesia, quorum queue logs) and the Erlang cookie
#   user rabbitmq, uid/gid 999    the unit chowns the data and the config to 999
#   RABBITMQ_NODENAME, ERL_EPMD_ADDRESS, RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS   from the unit
#   ports 5671/5672, 15671/15672 (management plugin enabled), 4369, 25672
# The gap to the official image: Debian's RabbitMQ 3.10.8 on Erlang 25, not 3.13.7; no
# docker-entrypoint.sh (no RABBITMQ_DEFAULT_USER and friends: the stack never uses them) and no
# gosu (the container runs as rabbitmq from the start); python3 of the container base is unused.
#
#   python -m devenv.builder.rabbitmq_image   # -> build/rabbitmq-image.tar (docker-archive)
FROM localhost/queue-workers/python-base:bookworm

LABEL org.opencontainers.image.title="queue-workers broker (RabbitMQ from Debian)" \
      org.opencontainers.image.description="Debian bookworm rabbitmq-server with the management plugin"

RUN set -eu; \
    groupadd --system --gid 999 rabbitmq; \
    useradd --system --uid 999 --gid 999 --home-dir /var/lib/rabbitmq --shell /usr/sbin/nologin rabbitmq; \
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        rabbitmq-server; \
    rm -f /usr/sbin/policy-rc.d; \
    rabbitmq-plugins enable --offline rabbitmq_management; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/lib/rabbitmq/mnesia /var/lib/rabbitmq/.erlang.cookie; \
    mkdir -p /etc/rabbitmq/conf.d /etc/rabbitmq/tls /var/lib/rabbitmq /var/log/rabbitmq; \
    chown -R 999:999 /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq; \
    test "$(id -u rabbitmq)" = 999; \
    dpkg-query -W -f='${Version}\n' rabbitmq-server > /etc/rabbitmq/debian-version

ENV HOME=/var/lib/rabbitmq \
    PATH=/usr/lib/rabbitmq/bin:$PATH

VOLUME /var/lib/rabbitmq
EXPOSE 4369 5671 5672 15671 15672 25672
USER rabbitmq
WORKDIR /var/lib/rabbitmq
CMD ["rabbitmq-server"]
