"""Zone rules on tracked objects: dwell, pile, crowd and occupied, one event each, and the
city events they become."""

import json

from processors.zone_rules import RuleState, step_camera, to_city_event, vision_event_id
from schemas.records import CityEvent, parse_record
from tests.unit.vision_factories import CAMERA, T0, box_at, camera, frame

CAM = camera()
CAR_IN_LANE = (box_at(150, 350, 120, 80), "car")


class Camera:
    """One camera's table value, fed frame by frame at a fixed rate as the agent does."""

    def __init__(self, config=CAM, value=None):
        self.config, self.value, self.seq, self.events = config, value, 0, []

    def show(self, seconds: float, objects, start: float, every: float = 1.0):
        steps = round(seconds / every)
        for i in range(steps):
            at = start + i * every
            step = step_camera(self.value, frame(self.seq, at, objects), self.config)
            # The value is JSON in a Faust table: make sure nothing else survives.
            self.value = json.loads(json.dumps(step.value))
            self.events.extend(step.events)
            self.seq += 1
        return start + steps * every

    def kinds(self):
        return [(e.rule, e.code) for e in self.events]


def test_a_car_in_the_fire_lane_fires_once_at_120_seconds_and_never_again():
    cam = Camera()
    t = cam.show(120, [CAR_IN_LANE], start=0)  # frames at 0..119 s: standing 119 s
    assert cam.events == []
    cam.show(2, [CAR_IN_LANE], start=t)  # 120 and 121 s
    assert cam.kinds() == [("lane.parked", "D03")]
    (event,) = cam.events
    assert event.seconds == 120 and event.first_seen == T0 and event.track_ids == (1,)
    assert event.class_name == "car" and event.zone_kind == "fire_lane" and event.count == 1
    assert event.confidence == 0.9 and event.seq == 120
    cam.show(600, [CAR_IN_LANE], start=t + 2)  # ten more minutes
    assert len(cam.events) == 1


def test_other_objects_and_places_do_not_fire_the_fire_lane_rule():
    cam = Camera()
    cam.show(300, [(box_at(150, 350, 40, 100), "person"),  # a person: not a vehicle
                   (box_at(500, 350, 120, 80), "car")], start=0)  # a car on the pavement
    assert cam.events == []


def test_a_flickering_car_never_fires():
    cam = Camera()
    for second in range(0, 400, 2):
        cam.show(1, [CAR_IN_LANE], start=second)
        cam.show(1, [], start=second + 1)
    assert cam.events == []


def _out_and_back(away_seconds: float, lose_track: bool) -> Camera:
    cam = Camera()
    t = cam.show(125, [CAR_IN_LANE], start=0)
    assert len(cam.events) == 1
    if lose_track:  # unseen long enough that the tracker drops it: a new track comes back
        t = cam.show(away_seconds, [], start=t)
    else:  # the same track drives out of the lane (to x = 450, the pavement) and back
        steps = [(box_at(150 + 20 * i, 350, 120, 80), "car") for i in range(16)]
        for obj in steps:
            t = cam.show(1, [obj], start=t)
        t = cam.show(away_seconds, [steps[-1]], start=t)
        for obj in reversed(steps):
            t = cam.show(1, [obj], start=t)
    cam.show(200, [CAR_IN_LANE], start=t)
    return cam


def test_leaving_and_coming_back_within_the_cool_down_is_the_same_incident():
    same_track = _out_and_back(60, lose_track=False)
    assert len(same_track.events) == 1
    assert {t for e in same_track.events for t in e.track_ids} == {1}
    lost_and_found = _out_and_back(60, lose_track=True)
    assert len(lost_and_found.events) == 1


def test_coming_back_after_the_cool_down_fires_again():
    same_track = _out_and_back(400, lose_track=False)
    assert same_track.kinds() == [("lane.parked", "D03")] * 2
    first, second = same_track.events
    assert first.track_ids == second.track_ids and first.event_id != second.event_id
    lost_and_found = _out_and_back(400, lose_track=True)
    assert [e.track_ids for e in lost_and_found.events] == [(1,), (2,)]


def _bicycles(n: int):
    return [(box_at(380 + 50 * i, 400, 40, 50), "bicycle") for i in range(n)]


def test_six_bicycles_piled_on_the_pavement_make_one_pile_event():
    cam = Camera()
    cam.show(300, _bicycles(6), start=0, every=2)
    assert cam.kinds() == [("walk.bikes", "D04")]
    (event,) = cam.events
    assert event.count == 6 and event.track_ids == (1, 2, 3, 4, 5, 6)
    assert event.box == (360, 350, 650, 400) and event.class_name == "bicycle"
    # Four do not make a pile.
    few = Camera()
    few.show(300, _bicycles(4), start=0, every=2)
    assert few.events == []


def _people(n: int):
    return [(box_at(380 + 40 * i, 300, 30, 90), "person") for i in range(n)]


def test_a_crowd_fires_once_per_episode_with_hysteresis():
    cam = Camera()
    t = cam.show(10, _people(7), start=0)
    assert cam.kinds() == [("walk.crowd", None)]
    # Confirmed on the third frame: seven people from 2 s on, and no minimum duration.
    assert cam.events[0].count == 7 and cam.events[0].first_seen == cam.events[0].at
    assert cam.events[0].at == T0.replace(second=2)
    # Down to 4 for 20 s (rearm 30 s), then 7 again: the same gathering.
    t = cam.show(20, _people(4), start=t)
    t = cam.show(10, _people(7), start=t)
    assert len(cam.events) == 1
    # Down to 4 for 40 s: the gathering is over; 7 again is a new one.
    t = cam.show(40, _people(4), start=t)
    cam.show(10, _people(7), start=t)
    assert len(cam.events) == 2 and cam.events[0].event_id != cam.events[1].event_id


def test_a_stall_on_a_market_free_street_fires_after_a_minute():
    cam = Camera()
    stall = [(box_at(850, 400, 150, 100), "stall")]
    t = cam.show(60, stall, start=0)  # first counted at 2 s (third frame): 57 s by 59 s
    assert cam.events == []
    cam.show(600, stall, start=t)
    assert cam.kinds() == [("street.stall", "D01")]
    assert cam.events[0].seconds == 60


def test_a_replay_of_the_same_frames_gives_the_same_event_ids():
    runs = []
    for _ in range(2):
        cam = Camera()
        cam.show(130, [CAR_IN_LANE] + _bicycles(6), start=0)
        runs.append([e.event_id for e in cam.events])
    assert len(runs[0]) == 2 and runs[0] == runs[1]
    assert runs[0][0] != vision_event_id(CAMERA, "lane.parked", "t1@0")


def test_an_ignored_frame_changes_nothing_and_a_broken_value_starts_afresh():
    cam = Camera()
    cam.show(5, [CAR_IN_LANE], start=0)
    repeat = step_camera(cam.value, frame(2, 2, [CAR_IN_LANE]), CAM)
    assert repeat.value is cam.value and repeat.events == ()
    assert repeat.tracking.status == "ignored"
    broken = step_camera({"tracker": {"v": 99}}, frame(9, 9, [CAR_IN_LANE]), CAM)
    assert broken.reset.startswith("tracker state is not version 1")
    assert broken.tracking.status == "tracked" and broken.value["tracker"]["seq"] == 9
    assert step_camera([1], frame(9, 9), CAM).reset == "camera state is a list, not an object"
    bad_track = {"tracker": {"v": 1, "next_id": 2, "tracks": [{"id": 1}]}}
    assert step_camera(bad_track, frame(9, 9), CAM).reset.startswith("track is not in the")
    bad_rules = {"rules": {"v": 1, "fired": {"lane.parked": [[1, 2]]}, "episodes": {}}}
    assert step_camera(bad_rules, frame(9, 9), CAM).reset.startswith("rule state is not in the")


def test_the_rule_state_survives_a_json_round_trip_and_forgets_removed_rules():
    cam = Camera()
    cam.show(130, [CAR_IN_LANE] + _people(7), start=0)
    rules = RuleState.from_json(cam.value["rules"])
    (car,) = {e.track_ids[0] for e in cam.events if e.rule == "lane.parked"}
    assert rules.to_json() == cam.value["rules"] and set(rules.fired["lane.parked"]) == {car}
    fewer = camera(rules=[{"name": "walk.crowd", "zone": "walk", "kind": "crowd",
                           "min_people": 6}])
    after = Camera(fewer, cam.value)
    after.seq = cam.seq
    after.show(1, [CAR_IN_LANE], start=130)
    assert set(after.value["rules"]["fired"]) == set() and after.events == []


def test_a_vision_event_becomes_a_valid_city_event(domain):
    cam = Camera()
    cam.show(122, [CAR_IN_LANE], start=0)
    (event,) = cam.events
    record = to_city_event(event, CAM, "s3://frames/cam-1/000120-blurred.jpg")
    parsed = parse_record(record)
    assert isinstance(parsed, CityEvent)
    assert record["source"] == "camera" and record["code"] == "D03"
    assert record["event_id"] == event.event_id and len(record["event_id"]) <= 64
    assert record["description"] == "摄像头cam-1检测到消防通道内车辆停留超过120秒"
    assert (record["district"], record["road"], record["location_type"]) == (
        "市南区", "香港中路", "main_road")
    assert parsed.reported_at == event.at == T0.replace(minute=2)
    assert record["code"] in domain.event_types
    assert (parsed.camera_id, parsed.detected_class, parsed.confidence, parsed.snapshot_uri) == (
        "cam-1", "car", 0.9, "s3://frames/cam-1/000120-blurred.jpg")


def test_descriptions_of_each_rule_kind():
    cam = Camera()
    stall = (box_at(850, 400, 150, 100), "stall")
    cam.show(70, [stall] + _people(7) + _bicycles(1), start=0)
    cam.show(10, [stall] + _bicycles(6), start=70)
    texts = {e.rule: to_city_event(e, CAM)["description"] for e in cam.events}
    assert texts == {
        "walk.crowd": "摄像头cam-1检测到人行道内人员聚集7人",
        "street.stall": "摄像头cam-1检测到禁止摆摊区域被摊位占用超过60秒",
        "walk.bikes": "摄像头cam-1检测到人行道内自行车堆放6辆",
    }
    crowd = next(e for e in cam.events if e.rule == "walk.crowd")
    assert "code" not in to_city_event(crowd, CAM)  # no taxonomy code: dispatch reads the text
