"""Scale-out: devices split over ingest workers by town. A relay takes MQTT and puts each message on the
JetStream subject of its device's shard; each worker takes only its shard, so every reading is taken by
exactly one worker and a rule over an area sees the whole area."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import nats
import numpy as np
import orjson
import pytest

from citybrain.platform import Platform
from citybrain.sensing.devices import service as devices
from citybrain.sensing.devices.index import DeviceIndex
from citybrain.sensing.ingest.pipeline import IngestPipeline
from citybrain.sensing.runtime import device_types
from citybrain.sensing.shards import ShardRouter, device_shards, owned_devices
from citybrain.settings import Settings
from tests.sensing.processes import CLI, Server, own_broker, prepare_home, publish_qos1, wait_until
from tests.services import NATS_URL, require_nats

pytestmark = pytest.mark.integration

SHARDS = 2
DEVICES = 300
READINGS_PER_DEVICE = 5


def _index(home: Path) -> tuple[Platform, DeviceIndex]:
    platform = Platform(Settings(home=home))
    platform.load_state()
    with platform.session() as session:
        index = devices.load_index(session, types=list(device_types()), org_tree=platform.org_tree)
    return platform, index


def test_shards_split_the_devices_by_town_and_the_pipelines_take_each_reading_once(tmp_path: Path) -> None:
    home, device_ids, district = prepare_home(tmp_path, DEVICES)
    platform, index = _index(home)
    try:
        tree = platform.org_tree
        shard_of = device_shards(index, tree, SHARDS)
        nums = index.lookup(device_ids)
        by_town: dict[str, set[int]] = {}
        for n in nums.tolist():
            chain = [index.org_units[index.org[n]], *reversed(tree.ancestors(index.org_units[index.org[n]]))]
            town = next(c for c in chain if tree.units[c].kind == "town")
            by_town.setdefault(town, set()).add(int(shard_of[n]))
        assert len(by_town) > 1 and all(len(shards) == 1 for shards in by_town.values())  # a town: one shard
        assert set(shard_of[nums].tolist()) == set(range(SHARDS))  # and every shard has devices

        types = device_types()
        districts = {district}
        now = time.time()
        messages = [(f"city/{district}/air_quality/{d}/telemetry",
                     orjson.dumps({"ts": now - 10 + i, "pm25": 20.0}), now)
                    for i in range(READINGS_PER_DEVICE) for d in device_ids]
        messages.append((f"city/{district}/air_quality/NOT-REGISTERED/telemetry", b'{"ts": 1.0}', now))
        accepted, dead = [], []
        for shard in range(SHARDS):
            pipeline = IngestPipeline(index=index, types=types, districts=districts)
            pipeline.owned = owned_devices(index, tree, SHARDS, shard)
            report = pipeline.process(messages)
            accepted.append(report.accepted_count)
            dead.append(len(report.dead))
            assert pipeline.counts["other_shard"] + report.accepted_count + len(report.dead) == len(messages)
        assert sum(accepted) == DEVICES * READINGS_PER_DEVICE
        assert dead == [1, 0]  # the unknown device's dead letter is kept once, by shard 0
        router = ShardRouter(index, tree, SHARDS, index.type_codes, districts)
        routed = router(messages)
        ids = [m[0].split("/")[3] for m in messages[:-1]]
        assert routed[:-1].tolist() == shard_of[index.lookup(ids)].tolist()
        assert routed[-1] == 0
    finally:
        platform.dispose()


async def _delete_stream(stream: str) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def test_a_relay_and_two_workers_take_every_reading_once_and_raise_the_alert(tmp_path: Path) -> None:
    require_nats()
    home, device_ids, district = prepare_home(tmp_path, DEVICES)
    platform, index = _index(home)
    shard_of = device_shards(index, platform.org_tree, SHARDS)
    expected = np.bincount(shard_of[index.lookup(device_ids)], minlength=SHARDS) * READINGS_PER_DEVICE
    platform.dispose()
    stream = f"TEST_TELEMETRY_{uuid.uuid4().hex[:8]}"
    start_ts = time.time() - 60
    hot = device_ids[0]
    sent = [(f"city/{district}/air_quality/{d}/telemetry",
             orjson.dumps({"ts": start_ts + i, "seq": i, "pm25": 300.0 if d == hot and i >= 3 else 30.0}))
            for i in range(READINGS_PER_DEVICE) for d in device_ids]

    workers: list[Server] = []
    relay = None
    with own_broker(tmp_path) as url:
        try:
            for shard in range(SHARDS):
                environment = {
                    "CITYBRAIN_TELEMETRY_NATS": NATS_URL,
                    "CITYBRAIN_TELEMETRY_STREAM": stream,
                    "CITYBRAIN_SENSING_SHARDS": str(SHARDS),
                    "CITYBRAIN_SENSING_SHARD": str(shard),
                    "CITYBRAIN_LAKE": str(tmp_path / f"lake-{shard}"),
                    "CITYBRAIN_VITALS_INTERVAL_S": "1",
                }
                workers.append(Server(home, environment, tmp_path / f"worker-{shard}.log",
                                      lambda status: bool((status.get("jetstream") or {}).get("connected"))))
            relay = subprocess.Popen(
                [CLI, "telemetry", "relay", "--shards", str(SHARDS), "--broker", url, "--nats", NATS_URL,
                 "--stream", stream, "--client-id", f"test-relay-{stream}", "--home", str(home)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert relay.stdout is not None
            seen = []
            while not (seen and seen[-1].startswith("relaying")):
                seen.append(asyncio.run(asyncio.wait_for(asyncio.to_thread(relay.stdout.readline), 60)))
                assert seen[-1], "".join(seen)  # the relay exited
            asyncio.run(publish_qos1(url, sent))

            def taken() -> list[int]:
                return [w.status()["counts"].get("accepted", 0) for w in workers]

            wait_until(lambda: sum(taken()) >= len(sent), 60, lambda: (taken(), expected))
            time.sleep(0.5)  # nothing more arrives: each reading was taken once, by its shard's worker
            assert taken() == expected.tolist()
            for worker in workers:
                status = worker.status()
                assert status["counts"].get("dead_letters", 0) == 0
                assert status["counts"].get("other_shard", 0) == 0
                assert status["jetstream"]["failed_batches"] == 0
            wait_until(lambda: all(w.status()["jetstream"]["acked"] >= 1 for w in workers), 10,
                       lambda: [w.status()["jetstream"] for w in workers])  # after the group commits
            # The workers share the store: the alerts API of either shows the one alert, raised by the hot
            # device's worker, with the severe and the heavy rule both crossed.
            alerts = workers[0].get("/api/v1/alerts?deviceType=air_quality")["items"]
            raised = sorted((a["ruleId"], a["subject"]) for a in alerts)
            assert raised == [("pm25-heavy", hot), ("pm25-severe", hot)]

            # Vital signs: each worker stores its own towns; the district's value is the merge of both
            # workers' parts: the mean PM2.5 of every station, the hot one included, and both alerts.
            def district_vitals() -> dict[str, float]:
                answer = workers[1].get(f"/api/v1/vitals?orgUnit={district}")
                return {i["indicator"]: i["value"] for i in answer["indicators"]}

            expected_mean = (300.0 + 30.0 * (DEVICES - 1)) / DEVICES
            wait_until(lambda: district_vitals().get("pm25_mean") == pytest.approx(expected_mean)
                       and district_vitals().get("alerts_open_critical", 0) + district_vitals().get(
                           "alerts_open_major", 0) == 2, 30, district_vitals)
            assert district_vitals()["device_online_rate"] == 1.0
        finally:
            if relay is not None:
                relay.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    relay.wait(timeout=20)
            for worker in workers:
                worker.stop()
            asyncio.run(_delete_stream(stream))
