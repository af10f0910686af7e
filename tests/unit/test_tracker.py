"""The per-camera IoU tracker: ids, confirmation, ageing, zones, order, bounds, state."""

import json
import math
import random

from processors.tracker import Detected, FrameDetections, TrackerState, from_ms, to_ms, update
from tests.unit.vision_factories import T0, box_at, camera, frame

CAM = camera()


def run(frames, state=None, config=CAM):
    state = state if state is not None else TrackerState()
    reports = [update(state, f, config) for f in frames]
    return state, reports


def test_a_box_moving_across_frames_keeps_its_id_and_is_confirmed_on_its_third_hit():
    frames = [frame(i, i / 10, [(box_at(100 + 8 * i, 300, 40, 100), "person")])
              for i in range(40)]
    state, reports = run(frames)
    ids = {r.assignments[0] for r in reports}
    assert len(ids) == 1 and len(state.tracks) == 1
    assert [i for i, r in enumerate(reports) if r.confirmed] == [2]
    assert [r.confirmed_assignments for r in reports[:4]] == [(None,), (None,), (1,), (1,)]
    track = state.tracks[0]
    assert (track.hits, track.first_seen, track.last_seen) == (40, to_ms(T0), to_ms(T0) + 3900)
    assert math.isclose(track.velocity[0], 80, abs_tol=1)  # 8 px a frame at 10 frames/s


def test_two_people_crossing_keep_their_own_tracks():
    # Walking towards each other at 10 px a frame; at frame 15 their boxes overlap by 80%.
    frames = [frame(i, i / 10, [(box_at(100 + 10 * i, 300, 40, 100), "person"),
                                (box_at(405 - 10 * i, 300, 40, 100), "person")])
              for i in range(31)]
    _, reports = run(frames)
    assert {r.assignments for r in reports} == {(1, 2)}


def test_a_one_frame_flicker_never_becomes_a_confirmed_track():
    spot = [(box_at(500, 300), "car")]
    state, reports = run([frame(0, 0), frame(1, 0.1, spot), frame(2, 0.2), frame(3, 0.3, spot),
                          frame(4, 0.4), frame(5, 0.5, spot), frame(6, 0.6)])
    assert not any(r.confirmed for r in reports) and state.tracks == []
    assert reports[1].created == (1,) and reports[2].dropped == (1,)


def test_a_confirmed_track_survives_missed_frames_but_not_max_age():
    car = [(box_at(500, 300), "car")]
    seen = [frame(i, i, car) for i in range(3)]
    state, _ = run(seen + [frame(3, 3), frame(4, 4), frame(5, 6.5, car)])
    assert [t.track_id for t in state.tracks] == [1]  # unseen 4.5 s < 5 s: the same car
    _, reports = run([frame(6, 7), frame(7, 12)], state)
    assert reports[-1].dropped == (1,) and state.tracks == []


def test_classes_of_one_group_share_a_track_and_other_groups_do_not():
    truck_or_car = [frame(i, i / 10, [(box_at(500, 300, 120, 80), "car" if i % 3 else "truck"),
                                      (box_at(500, 300, 30, 80), "person")])
                    for i in range(6)]
    state, reports = run(truck_or_car)
    assert {r.assignments for r in reports} == {(2, 1)}  # new ids go group by group
    car = state.track(2)
    assert car is not None and car.group == "vehicle" and car.class_name == "car"
    assert set(car.votes) == {"car", "truck"}


def test_one_van_seen_as_a_truck_and_as_a_car_is_one_track():
    van = [(box_at(500, 300, 120, 80), "truck"), (box_at(505, 300, 120, 80), "car"),
           (box_at(505, 300, 40, 80), "person")]  # a person in front of it is not the van
    state, reports = run([frame(i, i / 10, van) for i in range(4)])
    assert {r.assignments for r in reports} == {(2, None, 1)} and len(state.tracks) == 2


def test_only_detections_the_rules_need_above_the_score_threshold_are_tracked():
    f = FrameDetections(
        camera_id="cam-1", captured_at=T0, seq=0, width=1000, height=500,
        detections=(Detected(box_at(100, 300), "car", 0.9), Detected(box_at(300, 300), "car", 0.2),
                    Detected(box_at(500, 300), "dog", 0.9), Detected(box_at(700, 300), "bus", 0.9)),
    )
    _, (report,) = run([f])
    # The bus: no rule names it but it is in the vehicles' group with the rule's car.
    assert report.assignments == (1, None, None, 2) and report.rejected == 0


def test_malformed_detections_are_counted_not_fatal():
    class Odd:
        box = (1, 2, 3)
        class_name = "car"
        score = 0.9

    nan = float("nan")
    detections = (Detected((nan, 0, 10, 10), "car", 0.9), Detected((50, 50, 10, 10), "car", 0.9),
                  Detected(box_at(100, 300), "car", 1.5), Detected(box_at(100, 300), "", 0.9),
                  Detected((2000, 0, 2100, 10), "car", 0.9), Odd(), object(),
                  Detected(box_at(100, 300), "car", 0.9))
    f = FrameDetections("cam-1", T0, 0, 1000, 500, detections)
    _, (report,) = run([f])
    assert report.rejected == 7 and report.assignments[-1] == 1
    assert "box is not four finite numbers" in report.rejected_reasons


def test_frames_out_of_order_or_repeated_are_ignored_and_reported():
    car = [(box_at(500, 300), "car")]
    state, _ = run([frame(i, i, car) for i in range(5)])
    before = json.dumps(state.to_json())
    _, reports = run([frame(4, 4, car), frame(2, 2, car), frame(4, 4.5, car)], state)
    assert [r.status for r in reports] == ["ignored"] * 3
    assert reports[1].reason == "duplicate or out-of-order frame: seq 2 after 4"
    assert reports[1].assignments == (None,)
    assert json.dumps(state.to_json()) == before


def test_a_camera_that_restarts_its_numbering_is_tracked_afresh():
    car = [(box_at(500, 300), "car")]
    state, _ = run([frame(i, i, car) for i in range(100, 105)])
    _, (report,) = run([frame(0, 3600, car)], state)
    assert report.status == "tracked" and report.note.startswith("sequence restarted")
    assert report.dropped == (1,) and report.assignments == (2,)  # ids are never reused


def test_a_clock_going_back_lets_no_time_pass():
    car = [(box_at(150, 300), "car")]
    state, _ = run([frame(i, i, car) for i in range(3)])
    _, (report,) = run([frame(3, 1.5, car)], state)
    assert report.status == "tracked" and report.note == "clock went back 0.5 s"
    assert report.at == to_ms(T0) + 2000 and state.tracks[0].last_seen == report.at


def test_zones_are_judged_by_the_ground_point_and_survive_jitter_at_the_edge():
    # A tall box whose centre is above the fire lane (y < 200) but whose foot is in it.
    tall = [(box_at(290, 260, 60, 200), "truck")]
    state, _ = run([frame(i, i, tall) for i in range(3)])
    stay = state.tracks[0].stays["lane"]
    assert (stay.entered, stay.dwell_ms) == (to_ms(T0), 2000)
    # One frame with the foot outside (x 310 > 300), within the 3 s grace: the same stay.
    state, _ = run([frame(3, 3, [(box_at(310, 260, 60, 200), "truck")])], state)
    assert state.tracks[0].stays["lane"].out_since == to_ms(T0) + 3000
    state, _ = run([frame(i, i, tall) for i in range(4, 8)], state)
    assert [t.track_id for t in state.tracks] == [1]
    assert state.tracks[0].stays["lane"].entered == to_ms(T0)
    assert state.tracks[0].stays["lane"].dwell_ms == 7000
    # Driving out: the stay ends once it has been seen outside for the grace period.
    out = [frame(i, i, [(box_at(290 + 10 * (i - 7), 260, 60, 200), "truck")])
           for i in range(8, 16)]
    state, _ = run(out[:4], state)
    assert "lane" in state.tracks[0].stays
    state, _ = run(out[4:], state)
    assert [t.track_id for t in state.tracks] == [1] and "lane" not in state.tracks[0].stays


def test_a_smaller_frame_is_judged_against_the_scaled_zones():
    half = [(box_at(75, 150, 30, 20), "car")]  # (150, 300) at full size: in the fire lane
    state, _ = run([frame(i, i, half, size=(500, 250)) for i in range(3)])
    assert set(state.tracks[0].stays) == {"lane"}
    outside = [(box_at(75, 90, 30, 20), "car")]  # (150, 180): above the lane
    state, _ = run([frame(i, i, outside, size=(500, 250)) for i in range(3)])
    assert state.tracks[0].stays == {}


def test_the_state_survives_a_json_round_trip_unchanged():
    frames = [frame(i, i * 0.4, [(box_at(100 + 7 * i, 300), "car"),
                                 (box_at(480, 250 + 3 * i, 40, 100), "person"),
                                 (box_at(800 - 5 * i, 400), "stall")])
              for i in range(12)]
    state, _ = run(frames)
    text = json.dumps(state.to_json())
    again = TrackerState.from_json(json.loads(text))
    assert again == state and json.dumps(again.to_json()) == text
    # And it tracks on exactly as the original does.
    more = frame(12, 4.8, [(box_at(184, 300), "car")])
    assert update(again, more, CAM) == update(state, more, CAM) and again == state


def test_state_stays_bounded_under_ten_thousand_spurious_detections():
    rng = random.Random(9)
    classes = ["car", "person", "bicycle", "stall"]

    def spurious(seq: int, n: int) -> FrameDetections:
        boxes = []
        for _ in range(n):
            x, y = rng.uniform(0, 950), rng.uniform(0, 450)
            boxes.append(((x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50)),
                          rng.choice(classes)))
        return frame(seq, seq / 10, boxes, score=0.5)

    state, reports = run([spurious(i, 10) for i in range(500)])
    assert max(len(r.created) for r in reports) <= 10
    assert not any(r.confirmed for r in reports)
    _, (flood,) = run([spurious(500, 5000)], state)
    assert len(state.tracks) == 64 and sum(a is not None for a in flood.assignments) == 64
    assert len(json.dumps(state.to_json())) < 64 * 600


def test_confirmed_tracks_outrank_new_boxes_when_the_state_is_full():
    config = camera(tracker={"max_tracks": 2, "min_hits": 1})
    cars = [(box_at(100, 300), "car"), (box_at(500, 300), "car")]
    state, _ = run([frame(0, 0, cars)], config=config)
    _, (report,) = run([frame(1, 0.1, cars + [(box_at(800, 300), "car")])], state, config)
    assert [t.track_id for t in state.tracks] == [1, 2] and report.assignments == (1, 2, None)


def test_millisecond_clock_round_trips():
    at = T0.replace(microsecond=123000)
    assert from_ms(to_ms(at)) == at
