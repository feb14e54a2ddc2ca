"""The admin dashboard (`/dashboard/`): pages for operators, signed in as admin users."""
