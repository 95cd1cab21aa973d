"""The embedded broker: kombu's filesystem transport, all of its folders under one directory."""

from pathlib import Path


def filesystem_transport_options(folder: Path) -> dict:
    """Transport options for a filesystem broker in folder, creating its folders.

    The transport lists these folders on every poll and cannot create them itself; without
    control_folder it would write its exchange files into the current directory.
    """
    options = {
        "data_folder_in": folder / "queue",
        "data_folder_out": folder / "queue",
        "processed_folder": folder / "processed",
        "control_folder": folder / "control",
    }
    for path in options.values():
        path.mkdir(parents=True, exist_ok=True)
    return {**{key: str(path) for key, path in options.items()}, "store_processed": False}
