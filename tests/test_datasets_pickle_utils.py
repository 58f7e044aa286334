"""rdd.datasets.pickle_utils: load_pickle errors name file and config key; logger-free pickling keeps names."""
import logging
import pickle

import pytest
from easydict import EasyDict

from rdd.datasets.augmentor import DataAugmentor, DataBaseSampler
from rdd.datasets.dataset_template import DatasetTemplate
from rdd.datasets.pickle_utils import load_pickle


def test_load_pickle_round_trip_and_errors(tmp_path):
    good = tmp_path / 'good.pkl'
    good.write_bytes(pickle.dumps({'a': [1, 2]}))
    assert load_pickle(good, 'x') == {'a': [1, 2]}
    assert load_pickle(str(good), 'x') == {'a': [1, 2]}
    with pytest.raises(FileNotFoundError, match=r'^info \(KEY\.train\) not found: .*missing\.pkl$'):
        load_pickle(tmp_path / 'missing.pkl', 'info (KEY.train)')
    bad = tmp_path / 'trunc.pkl'
    bad.write_bytes(pickle.dumps(list(range(100)))[:20])
    with pytest.raises(ValueError, match=r'^info \(KEY\.train\) unreadable: .*trunc\.pkl: '):
        load_pickle(bad, 'info (KEY.train)')


def test_gt_sampling_missing_or_bad_db_info_names_key_and_file(tmp_path):
    cfg = EasyDict(NAME='gt_sampling', DB_INFO_PATH=['dbinfos.pkl'], NUM_POINT_FEATURES=5, SAMPLE_GROUPS=['car:2'])
    with pytest.raises(FileNotFoundError, match=r'gt_sampling.*DB_INFO_PATH.*not found: .*dbinfos\.pkl'):
        DataBaseSampler(tmp_path, cfg, ['car'])
    (tmp_path / 'dbinfos.pkl').write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match=r'gt_sampling.*DB_INFO_PATH.*unreadable: .*dbinfos\.pkl'):
        DataBaseSampler(tmp_path, cfg, ['car'])


@pytest.mark.parametrize('make, name', [
    (lambda lg: DataAugmentor(None, [], ['car'], logger=lg), 'rdd.datasets.augmentor.data_augmentor'),
    (lambda lg: DatasetTemplate(root_path='.', logger=lg), 'rdd.datasets'),
])
def test_pickling_drops_logger_and_restores_module_logger(make, name):
    obj = make(logging.getLogger('custom.logger'))
    assert obj.logger.name == 'custom.logger'
    assert 'logger' not in obj.__getstate__()
    copy = pickle.loads(pickle.dumps(obj))
    assert copy.logger is logging.getLogger(name)
    assert make(None).logger is logging.getLogger(name)


def test_sampler_unpickles_with_its_module_logger(tmp_path):
    (tmp_path / 'db.pkl').write_bytes(pickle.dumps({'car': []}))
    cfg = EasyDict(DB_INFO_PATH=['db.pkl'], NUM_POINT_FEATURES=5, SAMPLE_GROUPS=['car:2'])
    sampler = DataBaseSampler(tmp_path, cfg, ['car'], logger=logging.getLogger('custom.logger'))
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy.logger is logging.getLogger('rdd.datasets.augmentor.database_sampler')
    assert copy.db_infos == {'car': []} and copy.sample_groups['car']['sample_num'] == 2
