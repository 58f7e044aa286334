"""Static facts about the synthetic object classes: nuScenes category names, sizes and surface models.

Sizes are nuScenes' per-class mean sizes (metres). In the nuScenes convention a box's ``size`` is
``(w, l, h)``; here ``(l, w, h)`` = ``(dx, dy, dz)`` along the box's heading, as OpenPCDet uses.
"""
from __future__ import annotations

# detection name -> (general nuScenes category, mean (l, w, h), body scale (l, w, h), reflectivity)
# body scale: fraction of the annotated box that the ray-caster's solid body fills (objects are not cuboids;
# annotations are drawn around the object, so the visible surface lies a little inside the box).
CLASS_SPECS = {
    "car": ("vehicle.car", (4.62, 1.95, 1.73), (0.97, 0.94, 0.96), 30.0),
    "truck": ("vehicle.truck", (6.93, 2.51, 2.84), (0.98, 0.95, 0.97), 35.0),
    "construction_vehicle": ("vehicle.construction", (6.37, 2.73, 3.19), (0.96, 0.93, 0.95), 45.0),
    "bus": ("vehicle.bus.rigid", (10.50, 2.94, 3.47), (0.98, 0.96, 0.97), 35.0),
    "trailer": ("vehicle.trailer", (12.29, 2.90, 3.87), (0.98, 0.96, 0.97), 30.0),
    "barrier": ("movable_object.barrier", (0.48, 2.49, 0.98), (0.75, 0.96, 0.94), 90.0),
    "motorcycle": ("vehicle.motorcycle", (2.11, 0.77, 1.47), (0.92, 0.60, 0.92), 30.0),
    "bicycle": ("vehicle.bicycle", (1.70, 0.60, 1.28), (0.92, 0.45, 0.90), 20.0),
    "pedestrian": ("human.pedestrian.adult", (0.73, 0.67, 1.77), (0.55, 0.65, 0.96), 15.0),
    "traffic_cone": ("movable_object.trafficcone", (0.42, 0.41, 1.07), (0.70, 0.70, 0.90), 110.0),
}

DETECTION_CLASSES = tuple(CLASS_SPECS)

# All 23 nuScenes v1.0 general categories (name, description); the category table holds them all so that
# OpenPCDet's ``map_name_from_general_to_detection`` and the devkit's mappings find every name.
GENERAL_CATEGORIES = (
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.construction_worker", "Construction worker."),
    ("animal", "All animals."),
    ("vehicle.car", "Vehicle designed primarily for personal use."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.trailer", "Any vehicle trailer."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles."),
)

ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

VISIBILITIES = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)


def attribute_for(name: str, speed: float, stopped_in_lane: bool) -> str | None:
    """nuScenes attribute of one annotation (at most one), from its class and state; None for barriers/cones."""
    if name in ("car", "truck", "bus", "trailer", "construction_vehicle"):
        if speed > 0.3:
            return "vehicle.moving"
        return "vehicle.stopped" if stopped_in_lane else "vehicle.parked"
    if name in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if (speed > 0.3 or stopped_in_lane) else "cycle.without_rider"
    if name == "pedestrian":
        return "pedestrian.moving" if speed > 0.3 else "pedestrian.standing"
    return None


def visibility_token(fraction: float) -> str:
    """Visibility token '1'..'4' from the visible fraction in [0, 1] (nuScenes bins 0-40-60-80-100 %)."""
    if fraction < 0.4:
        return "1"
    if fraction < 0.6:
        return "2"
    if fraction < 0.8:
        return "3"
    return "4"
