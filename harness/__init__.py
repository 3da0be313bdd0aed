"""Harness for bhyve live migration: build, deploy, migrate, measure, verify."""
