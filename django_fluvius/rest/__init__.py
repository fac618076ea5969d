"""The REST face of django-fluvius, over Django REST framework.

``DomainRouter`` registers domains; viewsets run commands and serve resources.
"""
