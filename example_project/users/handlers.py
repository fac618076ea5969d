"""Event handlers of the user context (autodiscovered: this is the app's handlers.py)."""

from django.conf import settings
from django.core.mail import send_mail

from django_fluvius import event_handler


@event_handler("user-created", namespace="app-user")
def send_welcome_email(event):
    """Welcome a new user by email (Django's email backend).

    Runs after the command commits: in-process with FLUVIUS['DISPATCH'] = 'inline',
    in a Celery worker with 'celery'. The mail is sent last, inside the handler's
    transaction: if sending fails, the delivery is tried again later; an email is
    not a database row, so a crash between sending and committing may send it twice.
    """
    name = event.payload.get("name") or "there"
    send_mail(
        subject="Welcome!",
        message=f"Hello {name},\n\nwelcome aboard. Your account is ready.\n",
        from_email=getattr(settings, "DEFAULT_FROM_EMAIL", None),
        recipient_list=[event.payload["email"]],
    )
