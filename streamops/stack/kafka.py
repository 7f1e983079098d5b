"""Apache Kafka in KRaft mode: one combined broker and controller on loopback."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import uuid
from pathlib import Path

from streamops.disk import write_private
from streamops.errors import StreamopsError
from streamops.kafka_security import scram_jaas_config
from streamops.stack.base import Component, Health


def log4j2_config(log_dir: Path, max_bytes: int, keep: int, compress: bool = False) -> str:
    """The broker's log4j2 configuration (YAML), a pure function of the log settings.

    Everything goes to ``<log_dir>/server.log``, rolled by log4j2 itself at ``max_bytes`` with
    ``keep`` copies (``server.log.1`` the newest). Only warnings and errors also go to stdout,
    the stack's ``kafka.log``, so a failed start still shows in `streamops logs kafka` and in
    `up`'s error, while that file stays small.
    """
    suffix = ".gz" if compress else ""
    pattern = "[%d] %p %m (%c)%n"
    return f"""\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "{pattern}"
    RollingFile:
      name: SERVER
      fileName: "{log_dir / "server.log"}"
      filePattern: "{log_dir / "server.log"}.%i{suffix}"
      PatternLayout:
        pattern: "{pattern}"
      Policies:
        SizeBasedTriggeringPolicy:
          size: "{max_bytes}"
      DefaultRolloverStrategy:
        max: {keep}
        fileIndex: min
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
          level: WARN
        - ref: SERVER
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: INFO
"""


SCRAM_ITERATIONS = 8192
SCRAM_USERNAME = re.compile(r"[A-Za-z0-9._-]+")


class Kafka(Component):
    name = "kafka"
    # A controlled shutdown moves leadership and flushes logs; give it time before SIGKILL.
    stop_timeout_seconds = 45.0

    def ports(self) -> dict[str, int]:
        return {
            "kafka_port": self.settings.kafka_port,
            "kafka_controller_port": self.settings.kafka_controller_port,
        }

    @property
    def jars_dir(self) -> Path:
        return self.settings.kafka_jars_dir

    @property
    def classpath(self) -> str:
        return f"{self.jars_dir}/*"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def server_log_dir(self) -> Path:
        """Kafka's own log (server.log and its rolled copies), as opposed to its data."""
        return self.data_dir / "logs"

    @property
    def server_log_max_bytes(self) -> int:
        return self.settings.log_max_mb * 1024 * 1024

    def requires(self) -> list[tuple[str, str]]:
        return [("java", "Install a JDK 17 or newer (`apt-get install openjdk-17-jre-headless`).")]

    def _check_jars(self) -> None:
        if not (self.jars_dir / f"kafka_2.13-{self.settings.kafka_version}.jar").is_file():
            raise StreamopsError(
                f"The Kafka {self.settings.kafka_version} jars are not in {self.jars_dir}. "
                "Run `streamops install` (it resolves them with Maven) and try again."
            )

    @property
    def client_listener(self) -> str:
        """PLAINTEXT, or SASL_PLAINTEXT with SCRAM when the settings ask clients to authenticate
        (the local broker has no TLS: SASL_SSL is for brokers elsewhere)."""
        protocol = self.settings.kafka_security_protocol
        if protocol == "SASL_SSL":
            raise StreamopsError(
                "kafka_security_protocol is SASL_SSL, but the local stack's broker has no TLS "
                "listener: use SASL_PLAINTEXT for it (loopback), or point kafka_host at a broker "
                "with TLS and run without the local Kafka."
            )
        return protocol

    def _sasl_properties(self) -> list[str]:
        if self.client_listener == "PLAINTEXT":
            return []
        s = self.settings
        mechanism = s.kafka_sasl_mechanism
        return [
            f"sasl.enabled.mechanisms={mechanism}",
            f"sasl.mechanism.inter.broker.protocol={mechanism}",
            # The broker talks to itself as the platform's user: no second credential to keep.
            f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config="
            # A properties file reads backslashes as escapes: double them, or the JAAS line's
            # own escapes are gone before JAAS parses it.
            + scram_jaas_config(s.kafka_sasl_username, s.kafka_sasl_password).replace("\\", "\\\\"),
        ]

    def server_properties(self) -> str:
        s = self.settings
        listener = self.client_listener
        return "\n".join(
            [
                "# Written by streamops from its settings; edits are overwritten on start.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{self.host}:{s.kafka_controller_port}",
                f"listeners={listener}://{self.host}:{s.kafka_port},"
                f"CONTROLLER://{self.host}:{s.kafka_controller_port}",
                f"advertised.listeners={listener}://{s.kafka_host}:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT",
                f"inter.broker.listener.name={listener}",
                *self._sasl_properties(),
                f"log.dirs={self.log_dirs}",
                f"num.partitions={s.kafka_partitions}",
                f"default.replication.factor={s.kafka_replication_factor}",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                # `streamops up` creates the contract's topics; a typo must not create one.
                "auto.create.topics.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                # The receiving clock of the jobs' event_time_in_future rule: the broker's append
                # time, not the producer's (streamops.topics sets it on every topic as well).
                "log.message.timestamp.type=LogAppendTime",
                "",
            ]
        )

    def prepare(self) -> None:
        self._check_jars()
        formatted = (self.log_dirs / "meta.properties").exists()
        if formatted:
            self._check_scram_user()
        # It holds the SCRAM password when SASL is on: the service's user alone reads it.
        write_private(self.config_path, self.server_properties())
        (self.data_dir / "log4j2.yaml").write_text(
            log4j2_config(
                self.server_log_dir,
                self.server_log_max_bytes,
                self.settings.log_keep,
                self.settings.log_compress,
            )
        )
        if formatted:
            return
        # Formatting is once per data folder: the cluster id then stays with the data.
        cluster_id_file = self.data_dir / "cluster.id"
        # An id from before this fix could start with "-", which the format never accepted.
        if not cluster_id_file.exists() or cluster_id_file.read_text().startswith("-"):
            cluster_id_file.write_text(_kafka_cluster_id())
        scram_args = self._scram_argument_file()
        try:
            result = subprocess.run(
                [
                    "java",
                    "-cp",
                    self.classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id_file.read_text().strip(),
                    "-c",
                    str(self.config_path),
                    "--ignore-formatted",
                    *([f"@{scram_args}"] if scram_args else []),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            if scram_args:
                scram_args.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StreamopsError(
                f"Formatting Kafka's storage in {self.log_dirs} failed. If that folder holds data "
                "of another cluster, run `streamops reset` to start afresh.",
                log_tail=(result.stdout + result.stderr)[-2000:],
            )

    @property
    def scram_user_file(self) -> Path:
        """The SCRAM user the storage was formatted with (the name only, never the password)."""
        return self.data_dir / "scram.user"

    def _scram_argument_file(self) -> Path | None:
        """The format's ``--add-scram`` credential in an argument file (0600, deleted after the
        format): StorageTool reads ``@file`` one argument a line, so nothing secret shows on an
        argv (``ps``). The credential is in its salted form (the password itself is in no file
        but server.properties), which also spares the password from the credential syntax's
        special characters (``,``, ``=``, ``]``)."""
        if self.client_listener == "PLAINTEXT":
            self.scram_user_file.unlink(missing_ok=True)
            return None
        s = self.settings
        if not SCRAM_USERNAME.fullmatch(s.kafka_sasl_username):
            raise StreamopsError(
                f"kafka_sasl_username {s.kafka_sasl_username!r}: the local broker's SCRAM user "
                "takes letters, digits, '.', '_' and '-' only."
            )
        path = self.data_dir / "format.args"
        credential = scram_credential(
            s.kafka_sasl_mechanism, s.kafka_sasl_username, s.kafka_sasl_password
        )
        write_private(path, f"--add-scram\n{credential}\n")
        self.scram_user_file.write_text(f"{s.kafka_sasl_mechanism} {s.kafka_sasl_username}\n")
        return path

    def _check_scram_user(self) -> None:
        """SCRAM credentials are written once, when the storage is formatted: turning SASL on (or
        changing its user) later needs a fresh data folder, which this says instead of failing
        every client's login."""
        if self.client_listener == "PLAINTEXT":
            return
        s = self.settings
        wanted = f"{s.kafka_sasl_mechanism} {s.kafka_sasl_username}"
        try:
            formatted = self.scram_user_file.read_text().strip()
        except OSError:
            formatted = ""
        if formatted != wanted:
            raise StreamopsError(
                f"Kafka's storage in {self.log_dirs} was formatted "
                + (f"for the SCRAM user {formatted!r}" if formatted else "without SCRAM users")
                + f", but the settings ask for {wanted!r}. The local broker creates its SCRAM user "
                "when it formats its storage: run `streamops reset` (it deletes the local data) "
                "to start afresh with SASL."
            )

    def command(self) -> list[str]:
        return [
            "java",
            f"-Xmx{self.settings.kafka_heap}",
            f"-Xms{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.server_log_dir}",
            "-cp",
            self.classpath,
            "kafka.Kafka",
            str(self.config_path),
        ]

    def check_health(self) -> Health:
        from streamops.topics import admin_client

        metadata = admin_client(self.settings).list_topics(timeout=2)
        if not metadata.brokers:
            return Health(False, "no broker in metadata")
        return Health(True, f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics")

    def version(self) -> str:
        return self.settings.kafka_version

    def after_start(self) -> None:
        from streamops.topics import ensure_topics

        ensure_topics(self.settings)


def scram_credential(
    mechanism: str, username: str, password: str, salt: bytes | None = None
) -> str:
    """StorageTool's ``--add-scram`` value in the salted form: SCRAM's SaltedPassword is
    PBKDF2-HMAC of the password with the salt (RFC 5802's Hi), as Kafka's ScramFormatter
    computes it."""
    salt = os.urandom(24) if salt is None else salt
    digest = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, SCRAM_ITERATIONS)
    return (
        f"{mechanism}=[name={username},iterations={SCRAM_ITERATIONS},"
        f'salt="{base64.b64encode(salt).decode()}",'
        f'saltedpassword="{base64.b64encode(salted).decode()}"]'
    )


def _kafka_cluster_id() -> str:
    """16 random bytes in URL-safe base64 without padding, as Kafka's own ids, and like Kafka's
    ``Uuid.randomUuid`` never starting with "-": ``kafka-storage format -t -…`` reads such an id
    as an option and fails ("expected one argument"), one format in 64 (a CI run hit it)."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
