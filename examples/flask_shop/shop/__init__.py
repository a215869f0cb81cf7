"""A small Flask + SQLAlchemy 2.x shop, with realistic session misuse left in."""
import os
from typing import Any, Optional

from flask import Flask, jsonify

from . import db
from .services import ShopError, seed_catalog


def create_app(database_url: Optional[str] = None, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        DATABASE_URL=database_url or os.environ.get("SHOP_DATABASE_URL", db.DEFAULT_DATABASE_URL),
        FX_API_LATENCY=0.0,
        WAREHOUSE_ENABLED=False,
    )
    app.config.update(config)
    db.use_database(app.config["DATABASE_URL"])
    db.create_schema()

    from .views import bp
    app.register_blueprint(bp)

    @app.teardown_appcontext
    def remove_session(exc: Optional[BaseException] = None) -> None:
        db.db_session.remove()

    @app.errorhandler(ShopError)
    def shop_error(exc: ShopError) -> Any:
        return jsonify(error=str(exc)), exc.status

    @app.cli.command("seed")
    def seed_command() -> None:
        """Load the demo catalogue."""
        seed_catalog(db.db_session)
        db.db_session.commit()
        # misuse: remove() only runs when everything above succeeded; a failed
        # commit leaves the thread's session in the registry.
        db.db_session.remove()
        print("catalogue seeded")

    return app
