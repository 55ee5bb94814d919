"""jobs, scenes and render usage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:43:44.499859
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('client_id', sa.String(length=36), nullable=False),
    sa.Column('campaign_id', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('brief', sa.JSON(), nullable=False),
    sa.Column('advanced', sa.JSON(), nullable=False),
    sa.Column('preset', sa.String(length=64), nullable=False),
    sa.Column('aspect_ratio', sa.String(length=8), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('estimated_cost', sa.Float(), nullable=False),
    sa.Column('cost_breakdown', sa.JSON(), nullable=False),
    sa.Column('actual_cost', sa.Float(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('video_key', sa.String(length=255), nullable=True),
    sa.Column('thumbnail_key', sa.String(length=255), nullable=True),
    sa.Column('video_duration_s', sa.Float(), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_jobs_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_jobs_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('owner_id', 'idempotency_key', name=op.f('uq_jobs_owner_id'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)

    op.create_table('render_usage',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('scene_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('cost', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_render_usage_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_render_usage'))
    )
    with op.batch_alter_table('render_usage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_render_usage_job_id'), ['job_id'], unique=False)

    op.create_table('scenes',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('scene_idx', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('script', sa.Text(), nullable=False),
    sa.Column('shot_type', sa.String(length=32), nullable=False),
    sa.Column('transition', sa.String(length=32), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('image_prompt', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('regenerate_feedback', sa.Text(), nullable=True),
    sa.Column('image_key', sa.String(length=255), nullable=True),
    sa.Column('image_version', sa.Integer(), nullable=True),
    sa.Column('clip_key', sa.String(length=255), nullable=True),
    sa.Column('clip_version', sa.Integer(), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_scenes_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scenes'))
    )
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scenes_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scenes_owner_id'), ['owner_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scenes_owner_id'))
        batch_op.drop_index(batch_op.f('ix_scenes_job_id'))

    op.drop_table('scenes')
    with op.batch_alter_table('render_usage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_render_usage_job_id'))

    op.drop_table('render_usage')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_jobs_owner_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_client_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_campaign_id'))

    op.drop_table('jobs')
