"""Where events go: the ``Sink`` protocol and its implementations (JSON lines, MQTT)."""
