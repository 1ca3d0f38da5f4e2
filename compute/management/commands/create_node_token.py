from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from compute.models import Node
from compute.services.nodes import create_node, rotate_node_token


class Command(BaseCommand):
    help = "Issue a node token for a new pool node NAME and print it (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--rotate", action="store_true", help="if the node exists, issue it a new token instead"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        if admin is None:
            raise CommandError("Create a superuser first (manage.py createsuperuser).")
        existing = Node.objects.filter(name=options["name"]).first()
        if existing is not None and options["rotate"]:
            self.stdout.write(rotate_node_token(existing))
            return
        try:
            _, token = create_node(admin, options["name"])
        except Exception as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(token)
