#!/usr/bin/env bash
# Placeholder until the Data issue lands: FFCV install is not wired yet.
exit 0
