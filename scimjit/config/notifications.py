"""The `[notifications]` table: who is told what, through which channels.

Three events reach people (scimjit/access/notify.py builds them): `request.created` (each approver of the
policy), `request.decided` (the requester) and `access.expiring` (the user). Each goes through every channel
configured here: email over SMTP (`[notifications.email]`), one Slack-compatible incoming webhook, and the
`notify` method of the named `[[applications]]` connectors (webhook or plugin). Nothing configured: no
notifications (the `[jit] notify_applications` of `access.expiring` keep working as before).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from scimjit.config.values import Duration, Names, StrictModel


class EmailConfig(StrictModel):
    """`[notifications.email]`: the SMTP relay that mails go through."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True  # upgrade with STARTTLS before AUTH and the message (refused if the server cannot)
    username: str = ""  # empty: no AUTH
    password: str = Field(default="", repr=False)
    password_env: str = ""  # name of an environment variable holding the password
    sender: str = Field(alias="from")  # the From: address
    ca_file: str = ""  # PEM bundle to verify the relay's certificate with; empty: the system's trust store
    timeout: Duration = 10.0

    @field_validator("host", "sender")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a non-empty string")
        return value.strip()

    @model_validator(mode="after")
    def _one_password(self) -> EmailConfig:
        if self.password and self.password_env:
            raise ValueError("give password or password_env, not both")
        return self


class NotificationsConfig(StrictModel):
    """The whole `[notifications]` table."""

    email: EmailConfig | None = None
    slack_webhook_url: str = Field(default="", repr=False)  # a Slack(-compatible) incoming webhook URL
    slack_webhook_url_env: str = ""  # or the environment variable holding it (the URL is a secret)
    applications: Names = ()  # [[applications]] whose connector's `notify` gets every notification

    @model_validator(mode="after")
    def _one_url(self) -> NotificationsConfig:
        if self.slack_webhook_url and self.slack_webhook_url_env:
            raise ValueError("give slack_webhook_url or slack_webhook_url_env, not both")
        return self
