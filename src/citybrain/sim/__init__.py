"""Simulation: a synthetic device fleet over a district's real villages, and its telemetry over MQTT.

- `fleet`: `build_fleet` (columns: device_id, device_type, org_unit, lon, lat) and the fleet CSV;
- `models`: how each device type behaves when nothing is wrong, the incidents that trip its shipped rules,
  and their ground truth;
- `devices`: `TelemetryGenerator` (prebuilt PUBLISH packets patched slot by slot), `Simulator` (paces it over
  many MQTT connections), `bare_broker_throughput`;
- `wire`: the minimal MQTT 3.1.1 publisher and counting subscriber the load generator speaks;
- `bench`: `MqttSource`'s receive rate and CPU with the simulator as the load;
- `cli`: `simulate_app`, the `citybrain simulate …` commands.
"""
