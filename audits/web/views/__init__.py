"""The UI's views, one module per page family. Each validates, calls an action, renders."""
