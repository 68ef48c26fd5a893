import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import tiny_factory
from serving_support import RunningServer, png_bytes, post_image, request, responsive_model, scene

from tag2text.hub.inference import caption_batch
from tag2text.hub.serving_batcher import DynamicBatcher


class Recorder:
    """A run_batch that records its calls and checks that calls never overlap."""

    def __init__(self, fail_key=None, delay=0.0):
        self.calls, self.fail_key, self.delay = [], fail_key, delay
        self.active = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def __call__(self, key, payloads):
        with self.lock:
            self.active += 1
            self.overlapped |= self.active > 1
        try:
            time.sleep(self.delay)
            self.calls.append((key, list(payloads)))
            if key == self.fail_key:
                raise RuntimeError("model exploded")
            return [f"{key}:{p}" for p in payloads]
        finally:
            with self.lock:
                self.active -= 1


def test_batcher_fills_groups_by_key_and_answers_each_payload():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_batch_size=4, timeout_s=1.0)
    try:
        futures = [(f"a{i}", batcher.submit("A", f"a{i}")) for i in range(5)]
        futures += [(f"b{i}", batcher.submit("B", f"b{i}")) for i in range(2)]
        for payload, future in futures:
            assert future.result(10) == f"{'A' if payload[0] == 'a' else 'B'}:{payload}"
    finally:
        batcher.close()
    # A filled up at once; B and the rest of A waited for the timeout, then ran, each key on its own.
    assert recorder.calls[0] == ("A", ["a0", "a1", "a2", "a3"])
    assert sorted(recorder.calls[1:]) == [("A", ["a4"]), ("B", ["b0", "b1"])]
    stats = batcher.stats()
    assert stats["batch_size_histogram"] == {"1": 1, "2": 1, "4": 1}
    assert stats["requests"] == 7 and stats["batches"] == 3 and stats["largest_batch"] == 4
    assert not recorder.overlapped


def test_batcher_queues_while_busy_and_survives_a_failed_batch():
    recorder = Recorder(fail_key="bad", delay=0.3)
    batcher = DynamicBatcher(recorder, max_batch_size=8, timeout_s=0.0)
    try:
        first = batcher.submit("good", 0)
        time.sleep(0.1)  # the worker is now busy with `first`; these queue up and then run together
        queued = [batcher.submit("good", i) for i in range(1, 6)]
        bad = batcher.submit("bad", 99)
        assert first.result(10) == "good:0"
        assert [f.result(10) for f in queued] == [f"good:{i}" for i in range(1, 6)]
        with pytest.raises(RuntimeError, match="model exploded"):
            bad.result(10)
        assert batcher.submit("good", 7).result(10) == "good:7"  # the worker is still alive
    finally:
        batcher.close()
    assert ("good", [1, 2, 3, 4, 5]) in recorder.calls
    assert batcher.stats()["failed_batches"] == 1
    assert not recorder.overlapped


def test_batch_size_one_turns_batching_off():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_batch_size=1, timeout_s=1.0)
    try:
        futures = [batcher.submit("A", i) for i in range(4)]
        assert [f.result(10) for f in futures] == [f"A:{i}" for i in range(4)]
    finally:
        batcher.close()
    assert [len(p) for _, p in recorder.calls] == [1, 1, 1, 1]


def _alone(model, processor, image, tags=None, threshold=None, **generate_kwargs):
    """What the CLI's code path gives this image alone (model.tag + model.generate on pixel values)."""
    return caption_batch(model, processor, [image], tags, threshold, generate_kwargs)[0]


def test_simultaneous_http_requests_share_model_calls_and_equal_single_runs(tokenizer, processor):
    model = responsive_model(tokenizer)
    images = [scene(seed) for seed in range(8)]
    # (fields, expected-alone kwargs): six share the default options, two ask for greedy decoding
    # (fields, expected-alone kwargs): six share beam search with 8 new tokens, two ask for greedy decoding
    short = {"max_new_tokens": "8"}
    requests = [
        ({**short}, {}),
        ({**short, "tags": "dog | sky"}, {"tags": "dog | sky"}),
        ({**short, "threshold": "0.9974"}, {"threshold": 0.9974}),
        ({**short, "tags": ["fire hydrant", "bus"]}, {"tags": "fire hydrant | bus"}),
        ({**short, "num_beams": "3"}, {}),  # the model's default beam width: the same group as the first
        ({**short}, {}),
        ({**short, "num_beams": "1"}, {"num_beams": 1}),
        ({**short, "num_beams": "1"}, {"num_beams": 1}),
    ]
    with RunningServer(model, processor, max_batch_size=4, batch_timeout_s=4.0) as server:
        barrier = threading.Barrier(len(requests))

        def send(index):
            barrier.wait()
            return post_image(server.url + "/v1/caption", png_bytes(images[index]), **requests[index][0])

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, range(len(requests))))
        status, stats = request(server.url + "/v1/stats")
    assert status == 200
    assert [code for code, _ in answers] == [200] * len(requests), answers
    # 6 default-option requests: one full batch of 4 and one of 2; the 2 greedy ones: one batch of 2.
    assert stats["requests"] == 8
    assert stats["batch_size_histogram"] == {"2": 2, "4": 1}, stats
    assert stats["batches_by_options"] == {"('caption', 3, 8)": 2, "('caption', 1, 8)": 1}, stats
    for index, (_, answer) in enumerate(answers):
        kwargs = dict(requests[index][1])
        expected = _alone(model, processor, images[index], kwargs.pop("tags", None), kwargs.pop("threshold", None),
                          max_new_tokens=8, **kwargs)
        assert answer == expected, index
    assert len({answer["caption"] for _, answer in answers}) >= 4  # rows mixed up in a batch would show
    assert answers[2][1]["tags"] != answers[0][1]["tags"]  # the threshold request really tagged differently
    # steering replaces the tags the caption reads; the scores stay the predicted ones
    assert answers[1][1]["tags"] == ["dog", "sky"] and set(answers[1][1]["tag_scores"]) == {"cat", "grass", "red"}


def test_tags_endpoint_batches_without_the_decoder(model, processor):
    images = [tiny_factory.draw_image(seed, size=(40 + 8 * seed, 40)) for seed in range(4)]
    thresholds = [None, "0.5", "0.9974", None]
    with RunningServer(model, processor, max_batch_size=4, batch_timeout_s=4.0) as server:
        barrier = threading.Barrier(4)

        def send(index):
            barrier.wait()
            fields = {} if thresholds[index] is None else {"threshold": thresholds[index]}
            return post_image(server.url + "/v1/tags", png_bytes(images[index]), **fields)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, range(4)))
        _, health = request(server.url + "/health")
    assert health["batching"]["batch_size_histogram"] == {"4": 1}
    for index, (status, answer) in enumerate(answers):
        assert status == 200
        threshold = None if thresholds[index] is None else float(thresholds[index])
        alone = model.tag(processor(images=[images[index]])["pixel_values"], threshold=threshold)[0]
        assert answer == {"tags": alone.tags, "tag_scores": {t: round(s, 6) for t, s in zip(alone.tags, alone.scores)}}
