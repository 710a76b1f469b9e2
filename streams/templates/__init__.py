"""Message templates of the notification and bureau routers: ``<template_id>.<locale>.txt``.

A package only so that the wheel ships the ``*.txt`` files (package-data); nothing to import.
Placeholders use ``string.Template`` syntax (``${amount}``); see
``streams.core.routing.policy.TEMPLATE_PARAMS`` for the ones each template may use.
"""
