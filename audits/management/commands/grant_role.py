"""`manage.py grant_role USER ROLE [--remove]`: give a person a role, or take it away. Like every
role change it is a ledger event (made by "system" from the command line)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audits import actions
from audits.errors import ActionError
from audits.roles import Role


class Command(BaseCommand):
    help = "Grant (or with --remove, remove) an Assay role: " + ", ".join(r.value for r in Role)

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", choices=[role.value for role in Role])
        parser.add_argument("--remove", action="store_true", help="remove the role instead")

    def handle(self, *args, username, role, remove, **options):
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(
                f"no user {username!r}; an admin adds people at /admin/auth/user/add/ "
                "(or: manage.py createsuperuser for the first admin)"
            )
        change = actions.remove_role if remove else actions.grant_role
        try:
            change(actor=None, user=user, role=role)
        except ActionError as exc:
            raise CommandError(str(exc)) from None
        if role in (Role.ADMIN, Role.AUDITOR) and not user.is_staff and not remove:
            user.is_staff = True  # admins and auditors use the (read-only) Django admin too
            user.save(update_fields=["is_staff"])
        verb = "removed from" if remove else "granted to"
        self.stdout.write(f"role {role} {verb} {username} (a ledger event)")
