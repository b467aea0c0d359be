"""Configuration of the MQTT sink (pure pydantic: importing it never imports aiomqtt)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MqttConfig(BaseModel):
    """MQTT output. Filled in by the MQTT sink work (issue 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        "embedded",
        description="Broker as mqtt[s]://[user:pass@]host[:port], or 'embedded' for a local one.",
    )
    prefix: str = Field("edgeyolo", min_length=1, description="Topic prefix.")
