"""The demo app: the end-to-end flow behind `make demo`, its policies, its command and the
demo-model fetcher. It uses everything; nothing uses it."""
