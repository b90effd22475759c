"""Which params keys mean something for which data, and where a user's model may live.

`KIND_KEYS` lists the keys that mean something for some kinds of data only;
`check_kind` refuses them, set away from their defaults, for another kind (and every
family key beside `model.builder`); `check_builder` is the shape of `model.builder`.
Each stage calls `check_kind` on its own sections once the kind is known.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gradguard.errors import invalid

KINDS = ("image", "sequence", "table")  # what one example is: (H, W, C), (T, F) or (F,)
BUILDER_FOLDER = "nets"  # a user's model builders live here (a dependency of train)


# Keys that mean something for some kinds of data only -> those kinds. Set away from their
# default (the committed params.yaml's value: a test pins the two equal) for data of
# another kind, they are refused; `augment.copies` must be 0 for every kind but images.
KIND_KEYS = {
    "data.image_size": ("image",),
    "data.channels": ("image",),
    "data.standardize": ("sequence", "table"),
    "augment.copies": ("image",),
    "augment.rotation": ("image",),
    "augment.shift": ("image",),
    "augment.zoom": ("image",),
    "augment.noise_std": ("image",),
    "model.filters": ("image",),
    "model.kernel_size": ("image",),
    "model.pooling": ("image",),
    "model.head": ("image",),
    "model.batch_norm": ("image", "table"),
    "model.rnn": ("sequence",),
    "model.units": ("sequence",),
    "model.layers": ("sequence",),
    "model.recurrent_init": ("sequence",),
    "model.recurrent_scale": ("sequence",),
    "model.recurrent_nonzero": ("sequence",),
    "model.hidden": ("table",),
}


def check_kind(kind: str, **sections: Any) -> None:
    """Refuse the keys of the given sections (`data=`, `augment=`, `model=`: their params)
    that mean nothing for data of `kind` (`KIND_KEYS`), and, with `model.builder` set,
    every other `model` key: the builder's model is as it writes it. A key left at its
    default is never an error.

    Raises:
        ParamsError: one line naming the key, its value and the kind.
    """
    for key, kinds in KIND_KEYS.items():
        section, name = key.split(".")
        if section not in sections or kind in kinds:
            continue
        value = getattr(sections[section], name)
        if key == "augment.copies":
            if value != 0:
                raise invalid(key, value, f"0 for data.kind {kind!r} (augmentation is for images)")
            continue
        default = getattr(type(sections[section])(), name)
        if value != default:
            only = " and ".join(kinds)
            raise invalid(
                key, value, f"{default!r}: it means nothing for data.kind {kind!r}, only for {only}"
            )
    model = sections.get("model")
    if model is not None and model.builder is not None:
        defaults = type(model)()
        for field in dataclasses.fields(defaults):
            value, default = getattr(model, field.name), getattr(defaults, field.name)
            if field.name != "builder" and value != default:
                raise invalid(
                    f"model.{field.name}",
                    value,
                    f"{default!r}: with model.builder={model.builder!r} the model is as the "
                    "builder writes it",
                )


def check_builder(spec: str | None) -> None:
    """`model.builder` is null or `nets/<file>.py:<function>` (inside nets/, no `..`)."""
    if spec is None:
        return
    path, _, function = spec.rpartition(":")
    parts = path.split("/")
    ok = (
        len(parts) >= 2
        and parts[0] == BUILDER_FOLDER
        and ".." not in parts
        and "" not in parts
        and path.endswith(".py")
        and function.isidentifier()
    )
    if not ok:
        raise invalid(
            "model.builder",
            spec,
            f"null or '{BUILDER_FOLDER}/<file>.py:<function>', a file inside {BUILDER_FOLDER}/ "
            "(the folder dvc.yaml tracks as train's model code)",
        )
